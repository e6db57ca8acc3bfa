-- wrk -s bench/wrk_report.lua: print the run's summary as one JSON line.
--
-- bench.run reads the line that starts with WRKJSON. Latencies are in
-- microseconds, as wrk keeps them. errors.status is wrk's count of responses
-- with a status of 400 or more (the non-2xx of these stacks, which send no 3xx);
-- errors.timeout counts wrk's timeout events (--timeout).

done = function(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    p(50), p(75), p(90), p(99), p(99.9)))
end
