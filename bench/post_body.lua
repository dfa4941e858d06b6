-- wrk script: POST the body in the file BODY_FILE (absolute path). With JSON_LEN set, the body is
-- the binary tensor data extension (a JSON header of JSON_LEN bytes, then raw tensor bytes) and
-- goes out with Inference-Header-Content-Length; otherwise it is JSON.
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
local json_len = os.getenv("JSON_LEN")
if json_len and json_len ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = json_len
else
  wrk.headers["Content-Type"] = "application/json"
end
