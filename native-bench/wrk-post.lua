-- wrk script for the ingest bench (native-bench/ingest.ts runs it; see native-bench/README.md).
-- POSTs a small event to /api/events, rotating per request among the API keys given after `--`
-- (one organisation each, so no single org's rate limit caps the run).
--
--   wrk -t2 -c64 -d10s --timeout 10s -s native-bench/wrk-post.lua \
--       http://127.0.0.1:PORT/api/events -- nodedup KEY1 [KEY2 ...]
--
-- First argument: `dedup` (a unique dedup_id per request) or `nodedup`.
-- At the end prints one line `WRK_JSON {...}` with counts and latency percentiles in microseconds.

local body = '{"type":"bench.event","payload":{"i":1,"user":"u_123","amount":42.5,"tags":["a","b"]}}'
local dedup_body = '{"type":"bench.event","payload":{"i":1,"user":"u_123","amount":42.5,"tags":["a","b"]},"dedup_id":"wrk-%d-%d"}'

-- main state: number the threads so dedup ids differ between them
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end

-- thread state
local keys = {}
local prepared = {}
local dedup = false
local index = 0
local seq = 0

local function headers_for(key)
  return { ["Content-Type"] = "application/json", ["X-API-Key"] = key }
end

function init(args)
  dedup = args[1] == "dedup"
  for i = 2, #args do
    keys[#keys + 1] = args[i]
  end
  if #keys == 0 then
    error("wrk-post.lua: pass `dedup|nodedup KEY1 [KEY2 ...]` after --")
  end
  for i, key in ipairs(keys) do
    prepared[i] = wrk.format("POST", nil, headers_for(key), body)
  end
end

function request()
  index = index % #keys + 1
  if not dedup then
    return prepared[index]
  end
  seq = seq + 1
  return wrk.format("POST", nil, headers_for(keys[index]), string.format(dedup_body, thread_id or 0, seq))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.0f,"mean":%.3f,"max":%.0f,"p50":%.0f,"p90":%.0f,"p95":%.0f,"p99":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99)))
end
