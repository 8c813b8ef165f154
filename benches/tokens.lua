-- wrk script: each request consumes the next provisioning token from a file (one per line),
-- and the summary reports how many answers were 200 (a reused or exhausted token is a 404).
local tokens, i = {}, 0
ok, other = 0, 0 -- globals: done() reads them through thread:get
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end

function request()
  i = i + 1
  local t = tokens[((i - 1) % #tokens) + 1]
  return wrk.format("GET", "/provisioning/" .. t, { ["x-linphone-provisioning"] = "1" })
end

function response(status)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary)
  local total_ok, total_other = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_other = total_other + t:get("other")
  end
  io.write(string.format("TOKENS ok=%d other=%d\n", total_ok, total_other))
end
