-- wrk.lua plus a response hook that prints each distinct failing status once, with its body:
-- bench/loadgen.py runs it for a second after a measured run had failures, to say what they were.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk.lua")

local seen = {}

function response(status, headers, body)
  if status >= 300 and not seen[status] then
    seen[status] = true
    io.write(string.format("WRK_FAILURE %d %s\n", status, string.sub(body or "", 1, 500)))
  end
end
