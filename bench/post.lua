-- wrk script: POST a 4 KiB plain-text document as a raw body.
wrk.method = "POST"
wrk.path = "/documents?filename=bench.txt"
wrk.headers["Content-Type"] = "text/plain"
local words = {"river", "delta", "harbour", "glacier", "tide", "estuary", "basin", "current"}
local parts = {}
local size = 0
local i = 0
while size < 4096 do
  i = i + 1
  local word = words[(i % #words) + 1] .. " "
  parts[#parts + 1] = word
  size = size + #word
end
wrk.body = string.sub(table.concat(parts), 1, 4096)
