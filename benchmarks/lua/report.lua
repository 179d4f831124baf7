-- Shared by every script: per-thread seeding and one JSON line of results from done().
-- Rule: the orchestrator parses only the line starting with BENCH_JSON; latencies are in
-- microseconds as wrk measures them (closed loop: one request per connection at a time).

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

function seed_thread()
  -- tid is set by setup() in this thread's Lua state before init() runs.
  math.randomseed((tid or 1) * 7919 + 17)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
