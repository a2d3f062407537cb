-- wrk script of scripts/profile-load.py --op get: GET random keys k1..k10000 of the default
-- namespace (written first by wrk-fill.lua) with the consistency in the environment variable
-- WRK_CONSISTENCY, and print one RESULT line as wrk-put.lua does.
local consistency = os.getenv("WRK_CONSISTENCY") or "stale"
request = function()
  return wrk.format("GET", "/v1/kv/default/k" .. math.random(1, 10000) .. "?consistency=" .. consistency)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d errors=%d p50=%.2f p99=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
