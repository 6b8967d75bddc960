-- POST /api/users with a fresh email every time: wrk ... -s create.lua URL -- RUN_ID
-- done(), the JSON summary line the bench scripts parse: report.lua, next to this script.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = args[1] .. "-" .. tostring(tid)
end

function request()
  counter = counter + 1
  local body = string.format('{"name": "Bench User %d", "email": "bench-%s-%d@example.com"}', counter, prefix, counter)
  return wrk.format("POST", "/api/users", {["Content-Type"] = "application/json"}, body)
end
