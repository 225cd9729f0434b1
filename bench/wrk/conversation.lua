-- 5-turn lead-capture conversations: a question, contact details, budget, start, then both consents.
-- Each person is different (email and phone). A conversation's next turn is sent only after its previous answer
-- arrived (its session id read from the answer); the thread's connections take whichever turn is waiting, or start
-- a new conversation. Arguments after --: the run's tag (keeps people of different runs apart), then how many
-- conversations this thread completes before it says WRK_THREAD_DONE (0: no limit); past it, it finishes the turns
-- in flight and then only asks for /api/health until bench_versus stops wrk. (wrk calls request() once before the
-- run to check it, so "started" would miscount: the quota counts completed conversations.)
dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "report.lua")

local tag, quota = 0, 0
local waiting, conversations = {}, {}
local people, completed = 0, 0

function init(args)
  tag = tonumber(args[1] or "0")
  quota = tonumber(args[2] or "0")
end

local function post(body)
  return wrk.format("POST", "/api/chatbot/chat", {["Content-Type"] = "application/json"}, body)
end

local function turn(session, person, k)
  if k == 2 then
    local phone = string.format("%d %03d %03d", 500 + (tag * 64 + thread_no) % 200, math.floor(person / 1000) % 1000,
      person % 1000)
    return string.format('{"session_id": "%s", "message": "Jan Kowalski, bench-%d-%d-%d@example.com, %s, ' ..
      'Warszawa, 85 m2"}', session, tag, thread_no, person, phone)
  elseif k == 3 then
    return string.format('{"session_id": "%s", "message": "Budżet 250 tys. zł"}', session)
  elseif k == 4 then
    return string.format('{"session_id": "%s", "message": "Chcemy zacząć od zaraz"}', session)
  end
  return string.format('{"session_id": "%s", "message": "", "processing_consent": true, "marketing_consent": true}',
    session)
end

function request()
  local next_turn = table.remove(waiting)
  if next_turn then
    return post(turn(next_turn.session, next_turn.person, next_turn.k))
  end
  if quota > 0 and completed >= quota then
    return wrk.format("GET", "/api/health")
  end
  return post('{"message": "Dzień dobry, ile kosztuje wykończenie mieszkania?"}')
end

function response(status, headers, body)
  local session = status == 200 and body:match('"session_id":%s*"([^"]+)"')
  if not session then
    return  -- an error (wrk counts it) or a health answer: a failed conversation is left
  end
  local state = conversations[session]
  if not state then
    people = people + 1
    state = {person = people, k = 1}
    conversations[session] = state
  end
  if state.k < 5 then
    state.k = state.k + 1
    table.insert(waiting, 1, {session = session, person = state.person, k = state.k})
    return
  end
  conversations[session] = nil
  completed = completed + 1
  if quota > 0 and completed == quota then
    io.write("WRK_THREAD_DONE\n")
    io.flush()
  end
end
