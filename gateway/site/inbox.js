/* The sales inbox (/inbox/) and its login page (/inbox/login). The staff token is an HttpOnly cookie the login
 * sets; this script never sees it: same-origin calls carry it, Envoy checks it, and any 401 goes to the login page.
 * Live changes come from GET /api/inbox/events, read with fetch() as server-sent events (`data: <json>` lines). */
(function () {
  "use strict";
  var LOGIN = "/inbox/login";
  var AGENT = "novahouse-agent"; // who signed in here, "username\ndisplay name" (sessionStorage), to show and compare
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function api(method, path, body) {
    return fetch(path, {
      method: method, credentials: "same-origin",
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (response) {
      if (response.status === 401 && document.body.dataset.page === "inbox") { location.assign(LOGIN); }
      return response.json().catch(function () { return {}; }).then(function (json) {
        if (!response.ok) { var error = new Error(json.message || json.error || ("HTTP " + response.status)); error.status = response.status; throw error; }
        return json;
      });
    });
  }

  // --- the login page --------------------------------------------------------------------------------------------
  function loginPage() {
    var form = $("login"), error = $("login-error");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      error.textContent = "";
      var user = $("username").value.trim(), password = $("password").value;
      if (!user || !password) { error.textContent = "Podaj login i hasło."; return; }
      form.querySelector("button").disabled = true;
      api("POST", "/api/staff/login", { username: user, password: password }).then(function (answer) {
        try { sessionStorage.setItem(AGENT, user + "\n" + (answer.agent || user)); } catch (e) { /* private mode */ }
        location.assign("/inbox/");
      }, function (failure) {
        error.textContent = failure.status === 429 ? "Za dużo prób logowania. Spróbuj ponownie za chwilę."
          : failure.status === 401 || failure.status === 403 || failure.status === 400 || failure.status === 16
            ? "Nieprawidłowy login lub hasło." : "Logowanie jest chwilowo niedostępne.";
        $("password").focus();
      }).then(function () { form.querySelector("button").disabled = false; });
    });
    $("username").focus();
  }

  // --- formatting --------------------------------------------------------------------------------------------------
  var FIELDS = { name: "imię i nazwisko", email: "e-mail", phone: "telefon", city: "miasto", area_m2: "metraż",
                 budget: "budżet", start: "termin" };
  var STATUS = { new: "nowy", contacted: "kontakt nawiązany", won: "wygrany", lost: "przegrany" };
  var HANDOFF = { waiting: "czeka na konsultanta", agent: "rozmawia z konsultantem", callback: "prosi o telefon",
                  "": "odpowiada bot" };
  var REASON = { asked: "poprosił o konsultanta", button: "przycisk „Porozmawiaj z konsultantem”",
                 not_understood: "bot dwa razy nie zrozumiał" };
  var ROLE = { user: "Klient", bot: "Bot" };
  var LEAD_COLUMNS = ["Wynik", "Status", "Brakuje", "Prośba"];
  var REQUEST = { callback: "telefon", consultation: "konsultacja", site_visit: "wizyta", visit: "wizyta" };

  // A consent answer given with the widget's buttons is stored as "[consent processing=yes]": said in words here.
  function said(text) {
    var consent = /^\[consent (processing|marketing)=(yes|no)\]$/.exec(text);
    return consent ? (consent[1] === "processing" ? "Zgoda na przetwarzanie danych: " : "Zgoda marketingowa: ") +
      (consent[2] === "yes" ? "tak" : "nie") + " (przycisk)" : text;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function clock(iso) {
    var date = iso ? new Date(iso) : null;
    return date && !isNaN(date) && date.getTime() > 0
      ? date.toLocaleTimeString("pl-PL", { hour: "2-digit", minute: "2-digit" }) : "";
  }

  function budget(lead) {
    return +lead.budget_amount ? lead.budget_amount + " " + (lead.budget_currency || "PLN") : "";
  }

  // --- the inbox ---------------------------------------------------------------------------------------------------
  var current = null;     // the open conversation's id
  var shown = null;       // the open conversation as last read
  var refreshTimer = 0;
  var TITLE = document.title;
  var pending = {};       // what the next refresh reads again: conversations, leads, stats
  var statsReadAt = 0;
  var STATS_EVERY_MS = 30000; // the numbers are aggregates over days: read again at most this often on events

  function notice(text, bad) {
    var node = $("notice");
    node.textContent = text;
    node.classList.toggle("bad", !!bad);
  }

  function failed(error) { notice("Nie udało się: " + error.message, true); }

  function summaryItem(c) {
    var li = el("li", "conv-item");
    var link = el("a", "", c.visitor || "Gość bez imienia");
    link.href = "#/c/" + encodeURIComponent(c.conversation_id);
    li.appendChild(link);
    var meta = el("p", "meta");
    if (c.handoff === "waiting") {
      var since = new Date(c.waiting_since).getTime();
      var wait = el("span", "wait", "czeka " + duration(+c.waiting_seconds));
      if (since > 0) wait.dataset.since = String(since);
      meta.appendChild(wait);
      meta.appendChild(document.createTextNode(" · " + (REASON[c.reason] || c.reason || "")));
    } else {
      meta.textContent = "konsultant: " + (c.agent || "—");
    }
    li.appendChild(meta);
    if (c.last_message) li.appendChild(el("p", "last", "„" + c.last_message + "”"));
    return li;
  }

  function fill(listId, items) {
    var list = $(listId);
    list.textContent = "";
    items.forEach(function (c) { list.appendChild(summaryItem(c)); });
    $(listId + "-count").textContent = String(items.length);
    $(listId + "-empty").hidden = items.length > 0;
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".wait[data-since]").forEach(function (node) {
      node.textContent = "czeka " + duration((now - +node.dataset.since) / 1000);
    });
  }

  function loadConversations() {
    return api("GET", "/api/inbox/conversations").then(function (answer) {
      var waiting = answer.waiting || [];
      // The tab's title counts who waits, for an agent working in another tab.
      document.title = (waiting.length ? "(" + waiting.length + ") " : "") + TITLE;
      fill("waiting", waiting);
      fill("live", answer.live || []);
    });
  }

  function loadLeads() {
    return api("GET", "/api/inbox/leads").then(function (answer) {
      var body = $("leads").querySelector("tbody"), leads = answer.leads || [];
      body.textContent = "";
      leads.forEach(function (lead) {
        var row = el("tr");
        var who = el("td");
        var link = el("a", "", lead.name || lead.email || lead.phone || "bez danych");
        link.href = "#/c/" + encodeURIComponent(lead.conversation_id);
        who.appendChild(link);
        if (lead.phone) who.appendChild(el("span", "sub", lead.phone));
        row.appendChild(who);
        [lead.score, STATUS[lead.status] || lead.status,
         (lead.missing || []).map(function (f) { return FIELDS[f] || f; }).join(", ") || "—",
         [REQUEST[lead.request_kind] || lead.request_kind, lead.request_day, lead.request_time].filter(Boolean).join(" ") || "—"
        ].forEach(function (text, i) {
          var cell = el("td", "", text);
          cell.dataset.label = LEAD_COLUMNS[i]; // a phone shows each row as a card, each value with its name
          row.appendChild(cell);
        });
        body.appendChild(row);
      });
      $("leads-empty").hidden = leads.length > 0;
    });
  }

  function loadStats() {
    statsReadAt = Date.now();
    return api("GET", "/api/inbox/stats").then(function (stats) {
      var today = stats.today || {}, week = stats.week || {};
      var rows = [
        ["Rozmowy", "conversations"], ["Leady pełne", "leads_complete"], ["Leady częściowe", "leads_partial"],
        ["Przekazania konsultantowi", "handoffs"],
        ["Mediana czasu do 1. odpowiedzi", "median_first_reply_seconds", function (v) { return +v ? duration(+v) : "—"; }],
        ["Konwersja (rozmowa → lead)", "conversion", function (v) { return (Math.round(+v * 1000) / 10) + "%"; }]
      ];
      var body = $("stats").querySelector("tbody");
      body.textContent = "";
      rows.forEach(function (r) {
        var row = el("tr"), show = r[2] || function (v) { return +v || 0; };
        var head = el("th", "", r[0]);
        head.scope = "row";
        row.append(head, el("td", "num", show(today[r[1]])), el("td", "num", show(week[r[1]])));
        body.appendChild(row);
      });
    });
  }

  function refreshAll() {
    return Promise.all([loadConversations(), loadLeads(), loadStats()]).catch(failed);
  }

  // Many events in a burst (a conversation's messages) make one refresh, of what they concern only.
  function refreshSoon(what) {
    what.forEach(function (name) { pending[name] = true; });
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      var due = pending;
      pending = {};
      var reads = [];
      if (due.conversations) { reads.push(loadConversations()); if (current) loadTranscript(current); }
      if (due.leads) reads.push(loadLeads());
      if (due.stats && Date.now() - statsReadAt > STATS_EVERY_MS) reads.push(loadStats());
      Promise.all(reads).catch(failed);
    }, 150);
  }

  function showConversation(conv) {
    shown = conv;
    var s = conv.summary || {};
    var me = whoAmI();
    $("conv-h").textContent = "Rozmowa: " + (s.visitor || "gość bez imienia");
    var state = HANDOFF[s.handoff || ""] || s.handoff;
    if (s.handoff === "agent" && s.agent) state = "rozmawia z konsultantem: " + s.agent;
    $("conv-state").textContent = "Stan: " + state + (s.reason ? " · " + (REASON[s.reason] || s.reason) : "");
    var list = $("transcript");
    var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.textContent = "";
    (conv.messages || []).forEach(function (m) {
      var item = el("div", "m " + m.role);
      item.dataset.seq = m.seq;
      item.appendChild(el("span", "who", (m.role === "agent" ? (m.author || "Konsultant") : ROLE[m.role] || m.role) + " · " + clock(m.created_at)));
      item.appendChild(el("span", "text", said(m.text)));
      list.appendChild(item);
    });
    if (atBottom || !list.dataset.seen) list.scrollTop = list.scrollHeight;
    list.dataset.seen = "1";
    // One agent at a time replies; any agent may give a conversation back to the bot (one left by a colleague too).
    var held = s.handoff === "agent", mine = held && (s.agent === me[0] || s.agent === me[1]);
    $("take").hidden = held;
    $("hand-back").hidden = !s.handoff;
    $("reply").hidden = !mine;
    showLead(conv.lead);
  }

  // saved: the agent's own correction came back, as stored: every field shows the stored value again.
  function showLead(lead, saved) {
    $("no-lead").hidden = !!(lead && lead.lead_id);
    $("lead").hidden = !(lead && lead.lead_id);
    if (!lead || !lead.lead_id) return;
    var form = $("lead-form");
    var values = { name: lead.name, email: lead.email, phone: lead.phone, city: lead.city,
                   area_m2: +lead.area_m2 ? String(lead.area_m2) : "", budget: budget(lead), start: lead.start };
    var same = form.dataset.lead === lead.lead_id && !saved;
    Object.keys(values).forEach(function (name) {
      var input = form.elements[name];
      // An agent's unsaved edit survives a refresh; a field nobody touched follows the lead.
      if (!same || input.value === input.dataset.was) input.value = values[name] || "";
      input.dataset.was = values[name] || "";
    });
    form.dataset.lead = lead.lead_id;
    var missing = (lead.missing || []).map(function (f) { return FIELDS[f] || f; }).join(", ");
    $("lead-summary").textContent = "Wynik " + lead.score + "/100 · status: " + (STATUS[lead.status] || lead.status) +
      (missing ? " · brakuje: " + missing : " · komplet danych");
    if (!same) $("f-status").value = lead.status || "new";
  }

  function loadTranscript(id) {
    return api("GET", "/api/inbox/conversations/" + encodeURIComponent(id)).then(function (conv) {
      if (id === current) showConversation(conv);
    }, function (error) { if (id === current) failed(error); });
  }

  // [username, display name] of the agent signed in here, or ["", ""].
  function whoAmI() {
    var saved = "";
    try { saved = sessionStorage.getItem(AGENT) || ""; } catch (e) { /* private mode */ }
    var parts = saved.split("\n");
    return [parts[0] || "", parts[1] || parts[0] || ""];
  }

  function route() {
    var match = /^#\/c\/(.+)$/.exec(location.hash);
    current = match ? decodeURIComponent(match[1]) : null;
    $("list-view").hidden = !!current;
    $("conv-view").hidden = !current;
    notice("");
    if (current) {
      shown = null;
      $("transcript").textContent = "";
      delete $("transcript").dataset.seen;
      delete $("lead-form").dataset.lead;
      loadTranscript(current).then(function () { $("conv-h").focus(); });
    } else {
      refreshAll();
    }
  }

  // A take-over or hand-back; the focus goes to `next` (or stays in the view) as the button it was on may be gone.
  function act(button, verb, done, next) {
    if (!current) return;
    button.disabled = true;
    var id = current;
    api("POST", "/api/inbox/conversations/" + encodeURIComponent(id) + "/" + verb, { conversation_id: id })
      .then(function (conv) {
        if (id !== current) return;
        showConversation(conv);
        notice(done);
        (next || $("conv-h")).focus();
      }, failed)
      .then(function () { button.disabled = false; });
  }

  function inboxPage() {
    $("agent").textContent = whoAmI()[1];
    $("take").addEventListener("click", function () {
      act($("take"), "take", "Rozmowa przejęta: bot milczy, dopóki jej nie oddasz.", $("reply-text"));
    });
    $("hand-back").addEventListener("click", function () { act($("hand-back"), "hand-back", "Rozmowa wróciła do bota."); });
    $("reply").addEventListener("submit", function (event) {
      event.preventDefault();
      var box = $("reply-text"), text = box.value.trim(), id = current;
      if (!text) return;
      var button = event.target.querySelector("button");
      button.disabled = true;
      api("POST", "/api/inbox/conversations/" + encodeURIComponent(id) + "/reply", { conversation_id: id, text: text })
        .then(function () { box.value = ""; notice("Wysłano."); return loadTranscript(id); }, failed)
        .then(function () { button.disabled = false; box.focus(); });
    });
    $("lead-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target, fields = {}, changed = 0;
      Array.prototype.forEach.call(form.querySelectorAll("input"), function (input) {
        if (input.value.trim() !== input.dataset.was) { fields[input.name] = input.value.trim(); changed++; }
      });
      if (!changed) { notice("Nic się nie zmieniło."); return; }
      var id = form.dataset.lead;
      api("POST", "/api/inbox/leads/" + encodeURIComponent(id) + "/correct", { lead_id: id, fields: fields })
        .then(function (lead) { showLead(lead, true); notice("Poprawki zapisane; Monday.com zostanie zaktualizowany."); },
              function (error) { notice("Nie zapisano: " + error.message, true); });
    });
    $("status-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var id = $("lead-form").dataset.lead, status = $("f-status").value;
      api("POST", "/api/inbox/leads/" + encodeURIComponent(id) + "/status", { lead_id: id, status: status })
        .then(function (lead) { showLead(lead); notice("Status: " + (STATUS[lead.status] || lead.status) + "."); }, failed);
    });
    $("logout").addEventListener("click", function () {
      api("POST", "/api/staff/logout", {}).catch(function () {}).then(function () {
        try { sessionStorage.removeItem(AGENT); } catch (e) { /* nothing kept */ }
        location.assign(LOGIN);
      });
    });
    window.addEventListener("hashchange", route);
    // A transcript read to its end stays at its end when the window changes size (a phone turned, a keyboard).
    var log = $("transcript");
    log.addEventListener("scroll", function () {
      log.dataset.stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40 ? "1" : "";
    });
    window.addEventListener("resize", function () { if (log.dataset.stick) log.scrollTop = log.scrollHeight; });
    setInterval(tick, 1000);
    route();
    watch(0);
  }

  // The inbox's event stream; while it is open the agent counts as present. It ends after its time limit or when
  // a server drains: open it again at once, later and later after failures, and catch up with one refresh.
  function watch(failures) {
    var got = false, buffer = "", ctl = new AbortController(), watchdog;
    function alive() { clearTimeout(watchdog); watchdog = setTimeout(function () { ctl.abort(); }, 60000); }
    function line(text) {
      if (text.indexOf("data:") !== 0) return;
      var event;
      try { event = JSON.parse(text.slice(5)); } catch (e) { return; }
      if (!got) { got = true; $("live-state").textContent = "na żywo"; $("live-state").classList.add("on"); }
      if (event.conversation) refreshSoon(["conversations", "stats"]);
      if (event.lead_id) refreshSoon(["leads", "stats"]);
    }
    alive();
    fetch("/api/inbox/events", { credentials: "same-origin", signal: ctl.signal }).then(function (response) {
      if (response.status === 401) { location.assign(LOGIN); return; }
      if (!response.ok || !response.body) throw new Error(String(response.status));
      refreshSoon(["conversations", "leads"]); // catch up with what happened while no stream was open
      var reader = response.body.getReader(), decoder = new TextDecoder();
      return (function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          alive();
          buffer += decoder.decode(chunk.value, { stream: true });
          var lines = buffer.split("\n");
          buffer = lines.pop();
          lines.forEach(line);
          return pump();
        });
      })();
    }).catch(function () {}).then(function () {
      clearTimeout(watchdog);
      $("live-state").textContent = "łączenie…";
      $("live-state").classList.remove("on");
      var next = got ? 0 : failures + 1;
      setTimeout(function () { watch(next); }, next ? Math.min(30000, 1000 * Math.pow(2, next - 1)) : 0);
    });
  }

  if (document.body.dataset.page === "login") loginPage(); else inboxPage();
})();
