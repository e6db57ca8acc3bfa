-- wrk -s tests/load/mix.lua: the load tests' mixed traffic, and a JSON summary.
--
-- Every thread cycles through ten requests: six reads (/read: three primary-key
-- reads), three transactions (/tx) and one slow query (/slow?s=0.05, SELECT SLEEP).
-- done() prints one line starting with WRKJSON (latencies in microseconds;
-- errors.status counts responses with a status of 400 or more).

local paths = {"/read", "/tx", "/read", "/slow?s=0.05", "/read", "/tx", "/read", "/read", "/tx", "/read"}
local i = 0

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
