-- The consent status lookup of the seeds' route, GET /api/unsubscribe/status/{email}: a different address each
-- time, as different people ask (the platform then emails each a confirmation link).
-- Arguments after --: the run's tag, which keeps the addresses of different runs apart.
dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "report.lua")

local tag, n = "0", 0

function init(args)
  tag = args[1] or "0"
end

function request()
  n = n + 1
  return wrk.format("GET", string.format("/api/unsubscribe/status/status-%s-%d-%d@example.com", tag, thread_no, n))
end
