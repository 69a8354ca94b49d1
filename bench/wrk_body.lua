-- Load script for wrk that posts a body read from a file (bench/hostile_write.py passes the arguments after `--`):
--   METHOD PATH AUTHORIZATION FILE MODE TOKEN
-- FILE holds the body. Each run of 20 `U` characters in it is replaced, per request, by a 20-character name
-- unique in the run (TOKEN's first 8 characters, the wrk thread and a counter), so bodies that must be unique (a login name) stay
-- as long as written. MODE is "length" (Content-Length) or "chunked" (Transfer-Encoding: chunked, 64 KiB
-- chunks, so the server cannot tell the size before reading).
-- done() prints one line `WRK_JSON {...}` with the counts, latency percentiles in microseconds, and how many
-- responses of each status class arrived.

local threads = {}
local counter = 0
local method, path, auth, mode, token
local parts = {}
statuses = {}  -- global: done() reads it from each thread with thread:get
local PLACEHOLDER = string.rep("U", 20)

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local function split(text)
  local out, start = {}, 1
  while true do
    local i, j = string.find(text, PLACEHOLDER, start, true)
    if not i then
      table.insert(out, string.sub(text, start))
      return out
    end
    table.insert(out, string.sub(text, start, i - 1))
    start = j + 1
  end
end

function init(args)
  method, path, auth, mode, token = args[1], args[2], args[3], args[5], args[6]
  local file = assert(io.open(args[4], "rb"))
  parts = split(file:read("*a"))
  file:close()
end

local function chunked(body)
  local out = {}
  for i = 1, #body, 65536 do
    local piece = string.sub(body, i, i + 65535)
    table.insert(out, string.format("%x\r\n", #piece))
    table.insert(out, piece)
    table.insert(out, "\r\n")
  end
  table.insert(out, "0\r\n\r\n")
  return table.concat(out)
end

function request()
  counter = counter + 1
  local unique = string.format("%-8.8s%02d%010d", token, tid, counter)
  local body = table.concat(parts, unique)
  local head = string.format(
    "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\n",
    method, path, wrk.host, auth)
  if mode == "chunked" then
    return head .. "Transfer-Encoding: chunked\r\n\r\n" .. chunked(body)
  end
  return head .. string.format("Content-Length: %d\r\n\r\n", #body) .. body
end

function response(status, headers, body)
  local class = tostring(status)
  statuses[class] = (statuses[class] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for class, n in pairs(thread:get("statuses") or {}) do
      counts[class] = (counts[class] or 0) + n
    end
  end
  local pieces = {}
  for class, n in pairs(counts) do
    table.insert(pieces, string.format('"%s":%d', class, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(pieces, ",")))
end
