-- GET a random path from a file of paths, one a line: wrk ... -s paths.lua URL -- FILE SEED [AUTHORIZATION]
-- done(), the JSON summary line the bench scripts parse: report.lua, next to this script.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local paths = {}
local headers = {}

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  math.randomseed(tonumber(args[2]) or os.time())
  if args[3] and args[3] ~= "-" then
    headers["Authorization"] = args[3]
  end
end

function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
