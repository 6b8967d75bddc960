-- POST /api/users with a fresh email every time: wrk ... -s create.lua URL -- RUN_ID
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = args[1] .. "-" .. tostring(tid)
end

function request()
  counter = counter + 1
  local body = string.format('{"name": "Bench User %d", "email": "bench-%s-%d@example.com"}', counter, prefix, counter)
  return wrk.format("POST", "/api/users", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "bad_status": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
