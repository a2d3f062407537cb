-- wrk script of scripts/profile-load.py. WRK_OP in the environment chooses the requests, all
-- to the default namespace:
--   put  (default) PUT 256-byte values to random keys k1..k100000;
--   fill PUT 256-byte values to k1..k10000 in order, over and over (so that every key `get`
--        reads exists);
--   get  GET random keys k1..k10000 with the consistency in WRK_CONSISTENCY (default stale).
-- It prints one RESULT line: requests, non-2xx, socket errors, p50/p99 ms.
local op = os.getenv("WRK_OP") or "put"
local consistency = os.getenv("WRK_CONSISTENCY") or "stale"
local next_key = 0
wrk.method = "PUT"
wrk.body = string.rep("x", 256)
request = function()
  if op == "get" then
    return wrk.format("GET", "/v1/kv/default/k" .. math.random(1, 10000) .. "?consistency=" .. consistency, {}, "")
  elseif op == "fill" then
    next_key = next_key % 10000 + 1
    return wrk.format(nil, "/v1/kv/default/k" .. next_key)
  end
  return wrk.format(nil, "/v1/kv/default/k" .. math.random(1, 100000))
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d errors=%d p50=%.2f p99=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
