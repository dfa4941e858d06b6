-- wrk script: POST the JSON body in BODY (default infer_1x784.json), waiting DELAY_MS
-- milliseconds between a response and the next request on each connection (an open-loop-ish
-- fixed rate: connections x 1000 / (DELAY_MS + latency) requests/s).
local f = io.open(os.getenv("BODY") or "infer_1x784.json", "r")
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
local d = tonumber(os.getenv("DELAY_MS") or "0")
function delay() return d end
