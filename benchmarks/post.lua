-- POST a rotating mix of panel payloads as the browser sends them (text/plain, no preflight).
--
-- Usage: wrk -t1 -c16 -d10s -s post.lua http://127.0.0.1:PORT/write -- ROUND_FILE [FIRST_INDEX]
-- ROUND_FILE is written by benchmarks/payloads.py: a header "base<TAB>span", then one template
-- "offset<TAB>pre<TAB>mid<TAB>post" a line. Request i of the run is built exactly as
-- Mix.body(i) builds it in Python: pre .. cycle in 12 hex digits .. mid .. time .. post.
-- At the end one line "BENCH {json}" reports the counts and latencies the harness parses.

local templates = {}
local base, span, index = 0, 0, 0
local headers = { ["Content-Type"] = "text/plain;charset=UTF-8" }
local threads = {}
non201 = 0

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local header = file:read("*l")
   local b, s = header:match("^(%d+)\t(%d+)$")
   base, span = tonumber(b), tonumber(s)
   for line in file:lines() do
      local offset, pre, mid, post = line:match("^(%d+)\t([^\t]*)\t([^\t]*)\t([^\t]*)$")
      assert(offset, "bad template line")
      table.insert(templates, { tonumber(offset), pre, mid, post })
   end
   file:close()
   index = tonumber(args[2] or "0")
end

function request()
   local count = #templates
   local cycle = math.floor(index / count)
   local t = templates[index % count + 1]
   index = index + 1
   local body = t[2] .. string.format("%012x", cycle) .. t[3]
      .. string.format("%d", base + t[1] + cycle * span) .. t[4]
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   if status ~= 201 then
      non201 = non201 + 1
   end
end

function done(summary, latency, requests)
   local bad = 0
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non201")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"non201":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, bad, e.connect, e.read, e.write, e.timeout))
end
