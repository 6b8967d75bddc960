-- GET a random path from a file of paths, one a line: wrk ... -s paths.lua URL -- FILE SEED
-- done(), the JSON summary line the bench scripts parse: report.lua, next to this script.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local paths = {}

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  math.randomseed(tonumber(args[2]) or os.time())
end

function request()
  return wrk.format("GET", paths[math.random(#paths)])
end
