-- wrk script of scripts/profile-load.py --op get: PUT 256-byte values to k1..k10000 of the
-- default namespace in order, over and over, so that every key wrk-get.lua reads exists.
wrk.method = "PUT"
wrk.body = string.rep("x", 256)
local next_key = 0
request = function()
  next_key = next_key % 10000 + 1
  return wrk.format(nil, "/v1/kv/default/k" .. next_key)
end
