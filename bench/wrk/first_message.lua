-- A visitor's first message (a new conversation each time): a price question.
-- Arguments after --: the run's tag (unused here), then the think time in ms each connection waits between its
-- requests (0: closed loop at saturation).
dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "report.lua")

local think_ms = 0
local body = '{"message": "Ile kosztuje remont mieszkania?"}'

function init(args)
  think_ms = tonumber(args[2] or "0")
  wrk.method = "POST"
  wrk.path = "/api/chatbot/chat"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body
end

function delay()
  return think_ms
end
