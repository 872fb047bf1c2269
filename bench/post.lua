-- wrk script for bench/run.py: every request is the same POST, its body read once from
-- the file named by BENCH_BODY_FILE. No request()/response() functions, so wrk builds the
-- request once per thread and does not run Lua per response (the load generator shares
-- the machine with the Envoys under test).

local path = os.getenv("BENCH_BODY_FILE")
if path == nil or path == "" then
  error("BENCH_BODY_FILE is not set")
end
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
