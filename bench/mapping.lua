-- wrk script for bench/lab_mapping.py.
--
-- usage: wrk ... <url> -- <mode> <token> <run-prefix>
--   mode "mapping": POST /mapping, each request a unique external_id
--                   ("<run-prefix>-<thread>-<counter>"), exactly the headers
--                   Content-Type: application/json and Authorization: Bearer <token>.
--   mode "health":  GET /health (static request, no per-request Lua work).
-- done() prints one line "RESULT {json}" with the numbers the driver parses.

local counter = 0
thread_no = 0              -- global: setup() overrides it per thread (thread:set)
local prefix = "bench"
local key = "bench-key"

local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
end

function init(args)
  local mode = args[1] or "mapping"
  prefix = (args[3] or "bench") .. "-" .. tostring(thread_no)
  if mode == "health" then
    request = nil          -- static request: wrk builds it once
    wrk.method = "GET"
    wrk.body = nil
    return
  end
  wrk.method = "POST"
  -- wrk.headers already holds Host; add exactly these two
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "")
end

function request()
  counter = counter + 1
  local body = '{"external_id":"' .. prefix .. "-" .. counter ..
               '","external_key":"' .. key .. '"}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"duration_us":%d,"requests":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
