/* NovaHouse chat widget. Embedded by one tag:
 *   <script src="https://<gateway>/widget/v1/widget.js" data-lang="auto" async></script>
 * (data-lang: pl, en, or auto = the browser's language). It lives in a Shadow DOM, talks only to the public REST
 * routes of the gateway it was loaded from, and keeps in the browser (localStorage) only the conversation's
 * session id and secret, which read its transcript back after a reload or in a second tab. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__novahouseChat) return; // one widget per page, whatever the number of tags
  window.__novahouseChat = true;

  var API = new URL(script.src).origin;
  var STORE = "novahouse-chat";
  var TEXT = {
    pl: {
      open: "Otwórz czat z NovaHouse", launcher: "Czat", title: "NovaHouse", subtitle: "Doradca remontowy",
      close: "Zamknij czat", forget: "Zapomnij rozmowę", forgotten: "Rozmowa została zapomniana w tej przeglądarce.",
      input: "Twoja wiadomość", placeholder: "Napisz wiadomość…", send: "Wyślij", typing: "NovaHouse pisze…",
      you: "Ty: ", bot: "NovaHouse: ", topics: "Podpowiedzi", consent: "Zgoda", optional: "opcjonalna",
      privacy: "Jak przetwarzamy dane (polityka prywatności)",
      hello: "Dzień dobry! Jestem asystentem NovaHouse. Zapytaj o ceny, czas remontu albo poproś o wycenę.",
      starters: ["Ile kosztuje wykończenie mieszkania?", "Chcę wycenę mieszkania"],
      e429: "Za dużo wiadomości w krótkim czasie. Spróbuj ponownie za {s} s.",
      e503: "Czat jest chwilowo niedostępny. Spróbuj ponownie za chwilę.",
      e400: "Nie udało się wysłać tej wiadomości. Sprawdź, czy nie jest za długa, i spróbuj ponownie.",
      offline: "Brak połączenia z czatem. Sprawdź internet i spróbuj ponownie.",
      person: "Porozmawiaj z konsultantem", person_msg: "Chcę porozmawiać z konsultantem",
      waiting: "Czekasz na konsultanta", agent: "Konsultant: {a}", joined: "Konsultant dołączył", consultant: "Konsultant",
      back: "Konsultant zakończył rozmowę. Odpowiada znowu asystent NovaHouse."
    },
    en: {
      open: "Open the NovaHouse chat", launcher: "Chat", title: "NovaHouse", subtitle: "Renovation adviser",
      close: "Close the chat", forget: "Forget this conversation", forgotten: "This conversation was forgotten in this browser.",
      input: "Your message", placeholder: "Type a message…", send: "Send", typing: "NovaHouse is typing…",
      you: "You: ", bot: "NovaHouse: ", topics: "Suggestions", consent: "Consent", optional: "optional",
      privacy: "How we process your data (privacy notice)",
      hello: "Hello! I am the NovaHouse assistant. Ask about prices, how long a renovation takes, or request a quote.",
      starters: ["How much does a flat renovation cost?", "I want a quote for my flat"],
      e429: "Too many messages in a short time. Please try again in {s} s.",
      e503: "The chat is unavailable at the moment. Please try again shortly.",
      e400: "This message could not be sent. Please check it is not too long and try again.",
      offline: "No connection to the chat. Please check your internet connection and try again.",
      person: "Talk to a person", person_msg: "I would like to talk to a person",
      waiting: "Waiting for a consultant", agent: "Consultant: {a}", joined: "A consultant has joined", consultant: "Consultant",
      back: "The consultant has left. The NovaHouse assistant answers again."
    }
  };

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif}",
    ".launcher{position:fixed;right:16px;bottom:16px;z-index:2147483000;min-width:64px;height:56px;padding:0 20px;",
    "border:0;border-radius:28px;background:#0b5394;color:#fff;font-size:16px;font-weight:600;cursor:pointer;",
    "box-shadow:0 4px 14px rgba(0,0,0,.25)}",
    ".launcher:hover{background:#08406f}",
    "button:focus-visible,a:focus-visible,input:focus-visible,.log:focus-visible{outline:3px solid #f0b000;outline-offset:2px}",
    ".panel{position:fixed;right:8px;bottom:84px;z-index:2147483000;width:min(360px,calc(100vw - 16px));",
    "height:min(560px,calc(100vh - 100px));display:flex;flex-direction:column;background:#fff;color:#1b1f24;",
    "border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3);overflow:hidden;font-size:15px;line-height:1.4}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:6px;padding:10px 10px 10px 14px;background:#0b5394;color:#fff}",
    "header .who{flex:1;min-width:0}",
    "h2{margin:0;font-size:16px;font-weight:700}",
    "header p{margin:0;font-size:13px}",
    "header button{border:1px solid rgba(255,255,255,.7);background:transparent;color:#fff;border-radius:6px;",
    "font-size:13px;padding:5px 8px;cursor:pointer}",
    "header button:hover{background:#08406f}",
    "header .x{font-size:18px;line-height:1;padding:4px 9px}",
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#fff}",
    ".msg{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}",
    ".bot{align-self:flex-start;background:#eef1f5;color:#1b1f24;border-bottom-left-radius:4px}",
    ".user{align-self:flex-end;background:#0b5394;color:#fff;border-bottom-right-radius:4px}",
    ".agent{align-self:flex-start;background:#e5f4ea;color:#1b1f24;border:1px solid #7fbf95;border-bottom-left-radius:4px}",
    ".agent b{display:block;font-size:12px;color:#1d5e33}",
    ".sys{align-self:center;max-width:none;font-size:13px;color:#3d4652;text-align:center}",
    ".person{align-self:flex-start;margin:0 12px 6px;border:0;background:none;color:#0b5394;font-size:14px;",
    "text-decoration:underline;cursor:pointer;padding:2px 0}",
    ".person[hidden]{display:none}",
    ".note{align-self:stretch;max-width:none;background:#fdecea;color:#7a1a10;border:1px solid #e3a79f}",
    ".typing{align-self:flex-start;color:#3d4652;font-style:italic;font-size:14px}",
    ".consent{align-self:stretch;border:1px solid #9aa5b1;border-radius:10px;padding:10px;background:#fff}",
    ".consent h3{margin:0 0 4px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#3d4652}",
    ".consent p{margin:0 0 8px;white-space:pre-wrap}",
    ".consent a{color:#0b5394;font-size:14px}",
    ".row{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px}",
    ".chips{display:flex;flex-wrap:wrap;gap:6px;padding:0 12px 8px}",
    ".chip{border:1px solid #0b5394;background:#fff;color:#0b5394;border-radius:16px;padding:6px 12px;font-size:14px;",
    "cursor:pointer;text-align:left}",
    ".chip:hover{background:#e6eef7}",
    ".chip:disabled{border-color:#9aa5b1;background:#f4f5f7;color:#3d4652;cursor:default}",
    "form{display:flex;gap:6px;padding:10px;border-top:1px solid #d5dbe1}",
    "input{flex:1;min-width:0;padding:9px 10px;border:1px solid #6b7785;border-radius:8px;font-size:15px;color:#1b1f24;background:#fff}",
    "form button{border:0;border-radius:8px;background:#0b5394;color:#fff;font-size:15px;font-weight:600;padding:0 14px;cursor:pointer}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}"
  ].join("");

  var lang = pickLanguage(script.dataset.lang);
  var state = load();          // {session_id, secret} or null
  var busy = false;
  var restored = false;
  var handoff = "";            // "", "waiting", "agent" or "callback": where the conversation stands with a person
  var agentName = "";
  var lastSeq = 0;             // the newest message seen, for the event stream to go on after
  var seen = {};               // seq -> true: a message the stream sends again after a reconnect is shown once
  var stream = null;           // the open event stream's AbortController
  var retry = 0;               // consecutive failed connections, for the backoff

  function pickLanguage(wanted) {
    if (wanted === "pl" || wanted === "en") return wanted;
    var tags = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ""];
    for (var i = 0; i < tags.length; i++) {
      var tag = String(tags[i]).toLowerCase();
      if (tag.indexOf("pl") === 0) return "pl";
      if (tag.indexOf("en") === 0) return "en";
    }
    return "pl";
  }

  function t(key) { return TEXT[lang][key]; }

  function load() {
    try {
      var saved = JSON.parse(localStorage.getItem(STORE) || "null");
      return saved && saved.session_id ? saved : null;
    } catch (e) { return null; }
  }

  function save(value) {
    state = value;
    try {
      if (value) localStorage.setItem(STORE, JSON.stringify(value)); else localStorage.removeItem(STORE);
    } catch (e) { /* storage refused (private mode): the conversation lasts as long as the page */ }
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text) node.textContent = text;
    return node;
  }

  // --- the widget's DOM, in its own shadow root -------------------------------------------------------------
  var host = el("div", { id: "novahouse-chat" });
  var root = host.attachShadow({ mode: "open" });
  if (root.adoptedStyleSheets !== undefined && typeof CSSStyleSheet === "function") {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS); // a constructed sheet: the host page's CSP needs no 'unsafe-inline' style for it
    root.adoptedStyleSheets = [sheet];
  } else {
    root.appendChild(el("style", {}, CSS));
  }

  var launcher = el("button", { class: "launcher", type: "button", "aria-expanded": "false", "aria-controls": "panel" });
  var panel = el("section", { class: "panel", id: "panel", role: "dialog", "aria-labelledby": "title", hidden: "" });
  var header = el("header");
  var who = el("div", { class: "who" });
  var title = el("h2", { id: "title" });
  var subtitle = el("p");
  who.append(title, subtitle);
  var forgetButton = el("button", { type: "button", class: "forget" });
  var closeButton = el("button", { type: "button", class: "x" }, "×");
  header.append(who, forgetButton, closeButton);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0" });
  var chips = el("div", { class: "chips", role: "group" });
  var personButton = el("button", { type: "button", class: "person" });
  var form = el("form");
  var input = el("input", { type: "text", name: "message", autocomplete: "off", maxlength: "2000" });
  var sendButton = el("button", { type: "submit" });
  form.append(input, sendButton);
  panel.append(header, log, chips, personButton, form);
  root.append(launcher, panel);

  function label() {
    launcher.textContent = t("launcher");
    launcher.setAttribute("aria-label", t("open"));
    title.textContent = t("title");
    subtitle.textContent = handoff === "waiting" ? t("waiting")
      : handoff === "agent" ? (agentName ? t("agent").replace("{a}", agentName) : t("joined")) : t("subtitle");
    personButton.textContent = t("person");
    personButton.hidden = !!handoff;
    forgetButton.textContent = t("forget");
    closeButton.setAttribute("aria-label", t("close"));
    log.setAttribute("aria-label", t("title"));
    chips.setAttribute("aria-label", t("topics"));
    input.setAttribute("aria-label", t("input"));
    input.setAttribute("placeholder", t("placeholder"));
    sendButton.textContent = t("send");
    panel.setAttribute("lang", lang);
    launcher.setAttribute("lang", lang);
  }

  function scroll() { log.scrollTop = log.scrollHeight; }

  function say(role, text, intent, author) {
    var node = el("div", { class: "msg " + role });
    if (role === "agent") node.append(el("b", {}, (author || t("consultant")) + ":"), document.createTextNode(text));
    else node.append(el("span", { class: "sr" }, role === "user" ? t("you") : t("bot")), document.createTextNode(text));
    if (intent) node.dataset.intent = intent;
    log.appendChild(node);
    scroll();
    return node;
  }

  function note(text) {
    var node = el("div", { class: "msg note", role: "status" }, text);
    log.appendChild(node);
    scroll();
  }

  function offer(labels) {
    chips.textContent = "";
    labels.forEach(function (text) {
      var chip = el("button", { type: "button", class: "chip" }, text);
      chip.addEventListener("click", function () { send({ message: text }, text); });
      chips.appendChild(chip);
    });
    scroll(); // the buttons took room from the log: keep its newest message in view
  }

  function consentCard(prompt, reply) {
    var id = "consent-" + log.children.length;
    var card = el("div", { class: "consent", role: "group", "aria-labelledby": id });
    card.append(el("h3", { id: id }, t("consent") + (prompt.required ? "" : " (" + t("optional") + ")")),
                el("p", {}, prompt.text || reply));
    var link = el("a", { href: API + "/privacy#" + lang, target: "_blank", rel: "noopener" }, t("privacy"));
    card.appendChild(link);
    var row = el("div", { class: "row" });
    (prompt.choices || []).forEach(function (choice) {
      // Both answers look the same: neither is nudged, nor chosen until the visitor chooses.
      var button = el("button", { type: "button", class: "chip" + (choice.value ? " yes" : " no") }, choice.label);
      button.addEventListener("click", function () {
        if (busy) return;
        row.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        button.setAttribute("aria-pressed", "true");
        var body = { message: "" };
        body[prompt.kind === "marketing" ? "marketing_consent" : "processing_consent"] = !!choice.value;
        send(body, choice.label);
      });
      row.appendChild(button);
    });
    card.appendChild(row);
    log.appendChild(card);
    scroll();
  }

  function typing(on) {
    var current = log.querySelector(".typing");
    if (current) current.remove();
    log.setAttribute("aria-busy", on ? "true" : "false");
    if (on) { log.appendChild(el("div", { class: "msg typing" }, t("typing"))); scroll(); }
  }

  function reply(answer) {
    if (answer.session_id) save({ session_id: answer.session_id, secret: answer.session_secret || (state && state.secret) || "" });
    if (TEXT[answer.language]) { lang = answer.language; label(); }
    var prompt = answer.consent_prompt;
    var text = answer.reply || "";
    if (prompt && prompt.kind) {
      // The reply repeats the notice; the card shows it once, beside its choices.
      text = prompt.text ? text.replace(prompt.text, "").trim() : text;
      if (text) say("bot", text, answer.intent);
      consentCard(prompt, answer.reply || "");
    } else if (text) {
      say("bot", text, answer.intent);
    }
    var topics = (answer.suggestions || []).concat(answer.quick_replies || []).map(function (s) { return s.label; });
    offer(topics.filter(function (s, i) { return s && topics.indexOf(s) === i; }));
    if (answer.lead && answer.lead.lead_id) panel.dataset.lead = "stored";
    setHandoff(answer.handoff || "");
  }

  // The handoff's state: the header says it, and while a person is awaited or answering the widget listens.
  function setHandoff(value, quiet) {
    if (value === handoff) return follow();
    if (!value && handoff === "agent" && !quiet) say("sys", t("back"));
    handoff = value;
    if (value) panel.dataset.handoff = value; else delete panel.dataset.handoff;
    label();
    follow();
  }

  function follow() {
    var wanted = handoff === "waiting" || handoff === "agent";
    if (!wanted || !state || !state.secret) { if (stream) stream.abort(); stream = null; return; }
    if (stream) return;
    var ctl = stream = new AbortController();
    var buffer = "", watchdog, got = false;
    if (!lastSeq) { // what was said before this moment is known: the stream goes on after it, missing nothing
      transcript(ctl.signal).then(function (conversation) { got = !!conversation && lastSeq > 0; }, function () {}).then(ended);
      return;
    }
    function alive() { clearTimeout(watchdog); watchdog = setTimeout(function () { ctl.abort(); }, 60000); }
    function line(text) {
      if (text.indexOf("data:") !== 0) return;
      var event;
      try { event = JSON.parse(text.slice(5)); } catch (e) { return; }
      got = true;
      var m = event.message;
      if (m) {
        var seq = +m.seq || 0;
        if (seq > lastSeq) lastSeq = seq;
        if (m.role === "agent" && !(seq && seen[seq])) {
          seen[seq] = true;
          if (m.author) { agentName = m.author; label(); }
          say("agent", m.text, "", m.author);
        }
      }
      if (event.handoff !== undefined && event.handoff !== null) setHandoff(event.handoff);
    }
    alive();
    fetch(API + "/api/chatbot/conversations/" + encodeURIComponent(state.session_id) + "/events?after_seq=" + lastSeq, {
      headers: { "x-session-secret": state.secret }, credentials: "omit", mode: "cors", signal: ctl.signal
    }).then(function (response) {
      if (response.status === 404) { setHandoff("", true); return; }
      if (!response.ok || !response.body) throw new Error(String(response.status));
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
    }).catch(function () {}).then(ended);
    // The stream ended (its time limit, a draining server, a lost connection): go on after the last message seen,
    // at once after a stream that worked, later and later after each one that did not.
    function ended() {
      clearTimeout(watchdog);
      retry = got ? 0 : retry + 1;
      if (stream !== ctl) return;
      stream = null;
      setTimeout(follow, retry ? Math.min(30000, 1000 * Math.pow(2, retry - 1)) : 0);
    }
  }

  function failed(status, retryAfter) {
    if (status === 429) note(t("e429").replace("{s}", String(Math.max(1, parseInt(retryAfter, 10) || 1))));
    else if (status === 400) note(t("e400"));
    else if (status === 0) note(t("offline"));
    else note(t("e503"));
  }

  // Sends one message (or consent answer); false when another is still on its way.
  function send(body, shown) {
    if (busy) return false;
    busy = true;
    body.session_id = state ? state.session_id : "";
    if (shown) say("user", shown);
    offer([]);
    typing(true);
    // The button that sent it is gone or disabled: the keyboard goes on from the message field.
    if (!root.activeElement || root.activeElement.disabled) input.focus();
    fetch(API + "/api/chatbot/chat", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      credentials: "omit", mode: "cors"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        typing(false);
        if (response.ok) reply(json);
        else {
          failed(response.status, response.headers.get("retry-after") || json.retry_after_s);
          if (body.message && !input.value) input.value = body.message;
        }
      });
    }, function () {
      typing(false);
      failed(0);
      if (body.message && !input.value) input.value = body.message;
    }).then(function () { busy = false; });
    return true;
  }

  // The stored conversation, read with its secret; one the service no longer has (retention, erasure) is forgotten
  // here too. The first read shows all of it; later ones (before a stream opens) add what an agent said meanwhile.
  function transcript(signal) {
    var initial = !log.children.length;
    return fetch(API + "/api/chatbot/conversations/" + encodeURIComponent(state.session_id), {
      headers: { "x-session-secret": state.secret }, credentials: "omit", mode: "cors", signal: signal
    }).then(function (response) {
      if (response.status === 404) { save(null); reset(); greet(); return null; }
      return response.ok ? response.json() : null;
    }).then(function (conversation) {
      if (!conversation) return null;
      if (initial) greet(true);
      var prompt = conversation.consent_prompt;
      var messages = conversation.messages || [];
      messages.forEach(function (m, i) {
        var text = m.text, seq = +m.seq || 0;
        if (seq > lastSeq) lastSeq = seq;
        if (m.role === "agent") agentName = m.author;
        if ((seq && seen[seq]) || !(initial || m.role === "agent")) return;
        seen[seq] = true;
        // A consent question still waiting: its notice goes on the card, with its buttons, as when it was asked.
        if (prompt && prompt.text && i === messages.length - 1) text = text.replace(prompt.text, "").trim();
        if (text) say(m.role === "user" || m.role === "agent" ? m.role : "bot", text, "", m.author);
      });
      if (initial && prompt && prompt.kind) consentCard(prompt, "");
      if (conversation.lead && conversation.lead.lead_id) panel.dataset.lead = "stored";
      setHandoff(conversation.handoff || "", initial);
      return conversation;
    });
  }

  function restore() {
    restored = true;
    if (!state || !state.secret) { greet(); return; }
    transcript().then(function (conversation) { if (!conversation && !log.children.length) greet(); },
                      function () { if (!log.children.length) greet(); });
  }

  function greet(quiet) {
    say("bot", t("hello"));
    if (!quiet) offer(t("starters"));
  }

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    if (!restored) restore();
    input.focus();
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  function reset() {
    lastSeq = 0; seen = {}; agentName = "";
    setHandoff("", true);
    log.textContent = "";
    offer([]);
    delete panel.dataset.lead;
  }

  function forget() {
    save(null);
    reset();
    note(t("forgotten"));
    greet();
    input.focus();
  }

  launcher.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  closeButton.addEventListener("click", close);
  forgetButton.addEventListener("click", forget);
  personButton.addEventListener("click", function () { send({ message: t("person_msg"), request_person: true }, t("person_msg")); });
  panel.addEventListener("keydown", function (event) { if (event.key === "Escape") { event.preventDefault(); close(); } });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (text && send({ message: text }, text)) input.value = "";
  });
  // Another tab started, continued or forgot the conversation: this one follows.
  window.addEventListener("storage", function (event) {
    if (event.key !== STORE) return;
    var previous = state;
    state = load();
    if (!state && previous) { reset(); greet(); }
    else if (state && (!previous || previous.session_id !== state.session_id) && restored) { reset(); restore(); }
  });

  function mount() {
    document.body.appendChild(host);
    host.dataset.ready = "true";
    if (window.performance && performance.mark) performance.mark("novahouse-chat-ready");
  }

  label();
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
