-- POST /api/users with a fresh email every time: wrk ... -s create.lua URL -- RUN_ID [AUTHORIZATION]
-- done(), the JSON summary line the bench scripts parse: report.lua, next to this script.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local headers = {["Content-Type"] = "application/json"}

function init(args)
  prefix = args[1] .. "-" .. tostring(tid)
  if args[2] and args[2] ~= "-" then
    headers["Authorization"] = args[2]
  end
end

function request()
  counter = counter + 1
  local body = string.format('{"name": "Bench User %d", "email": "bench-%s-%d@example.com"}', counter, prefix, counter)
  return wrk.format("POST", "/api/users", headers, body)
end
