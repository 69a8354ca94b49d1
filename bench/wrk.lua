-- Load script for wrk (bench/loadgen.py passes the arguments after `--`):
--   METHOD PATH AUTHORIZATION BODY TOKEN
-- BODY is "none" (a fixed request, built once) or "user" (a CreateUser body whose LoginName is unique
-- per request: TOKEN names the run, each wrk thread numbers its own requests).
-- done() prints one line `WRK_JSON {...}` with the counts and latency percentiles in microseconds.

local threads = {}
local counter = 0
local method, path, auth, body_kind, token
local fixed

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  method, path, auth, body_kind, token = args[1], args[2], args[3], args[4], args[5]
  wrk.headers["Authorization"] = auth
  if body_kind ~= "none" then
    wrk.headers["Content-Type"] = "application/json"
  end
  fixed = wrk.format(method, path)
end

local USER = '{"LoginName":"%s@bench.example","Email":"%s@bench.example","Title":"Bench %s","Department":"Bench"}'

function request()
  if body_kind == "none" then
    return fixed
  end
  counter = counter + 1
  local unique = string.format("%s-%d-%d", token, tid, counter)
  return wrk.format(method, path, nil, string.format(USER, unique, unique, unique))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
