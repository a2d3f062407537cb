-- wrk script of scripts/profile-load.py: PUT 256-byte values to random keys of the default
-- namespace, and print one RESULT line (requests, non-2xx, socket errors, p50/p99 ms) for it.
wrk.method = "PUT"
wrk.body = string.rep("x", 256)
request = function()
  return wrk.format(nil, "/v1/kv/default/k" .. math.random(1, 100000))
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d errors=%d p50=%.2f p99=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
