-- wrk script: GET /documents/{id} for ids picked at random from ids.txt (one per line).
local ids = {}
init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
end
request = function()
  return wrk.format("GET", "/documents/" .. ids[math.random(#ids)])
end
