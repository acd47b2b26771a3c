// The student's page: a terminal per node (xterm.js over a websocket to SSH on the node),
// Check and Hint. Everything the server sends is shown as text, never as HTML.
"use strict";
const token = document.body.dataset.token;
const T = JSON.parse(document.body.dataset.text || "{}");  // the page's words in the class's language
const base = `/s/${encodeURIComponent(token)}`;
const terminals = {};

// A lost connection (the portal restarted, the laptop slept) reconnects by itself, waiting a
// little longer each time; a session the server ended waits for Enter, so a shell the student
// left with `exit` does not come back on its own.
function openTerminal(node) {
  const el = document.getElementById(`term-${node}`);
  const term = new Terminal({ cursorBlink: true, rendererType: "dom", fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const entry = { term, ws: null, retries: 0, waitingForEnter: false };
  terminals[node] = entry;
  const send = (event) => { if (entry.ws && entry.ws.readyState === WebSocket.OPEN) entry.ws.send(JSON.stringify(event)); };
  const resize = () => send({ type: "resize", cols: term.cols, rows: term.rows });
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}${base}/term/${encodeURIComponent(node)}`);
    ws.binaryType = "arraybuffer";
    entry.ws = ws;
    ws.onopen = () => {
      if (entry.retries > 0) term.write(`\r\n${T.reconnected}\r\n`);
      entry.retries = 0;
      delete el.dataset.closed;
      resize();
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string" && e.data.startsWith("{")) { showWatched(node, JSON.parse(e.data)); return; }
      term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
    };
    ws.onclose = (e) => {
      el.dataset.closed = "1";
      if (e.code === 1000) {
        entry.waitingForEnter = true;
        term.write(`\r\n${T.press_enter}\r\n`);
        return;
      }
      const delay = Math.min(10, 2 ** entry.retries);
      entry.retries += 1;
      term.write(`\r\n${T.reconnecting.replace("{s}", delay)}\r\n`);
      setTimeout(connect, delay * 1000);
    };
  }
  term.onData((data) => {
    if (entry.waitingForEnter) {
      if (data.includes("\r")) { entry.waitingForEnter = false; entry.retries = 1; connect(); }
      return;
    }
    send({ type: "input", data });
  });
  window.addEventListener("resize", () => { fit.fit(); resize(); });
  connect();
}

// The instructor watching (or typing into) one of these terminals, said at the top of the page.
const marks = {};
function showWatched(node, mark) {
  if (mark.type !== "watch") return;
  marks[node] = mark;
  const all = Object.values(marks);
  const el = document.getElementById("watched");
  el.textContent = all.some((m) => m.typing) ? `· ${T.typing}` : all.some((m) => m.watching) ? `· ${T.watching}` : "";
  el.hidden = !el.textContent;
}

function show(node) {
  document.querySelectorAll(".term").forEach((el) => { el.hidden = el.dataset.node !== node; });
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.node === node));
  if (!terminals[node]) openTerminal(node);
  terminals[node].term.focus();
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.node)));
const first = document.querySelector(".tab");
if (first) show(first.dataset.node);

function line(parent, text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  parent.appendChild(li);
}

const check = document.getElementById("check");
if (check) check.addEventListener("click", async () => {
  const out = document.getElementById("verdicts");
  out.textContent = T.checking;
  check.disabled = true;
  try {
    const r = await fetch(`${base}/check`, { method: "POST" });
    const answer = await r.json();
    out.textContent = "";
    if (answer.error) { out.textContent = answer.error; out.className = "bad"; return; }
    const head = document.createElement("p");
    head.textContent = answer.ok ? T.pass : T.fail;
    head.className = answer.ok ? "ok" : "bad";
    head.id = "verdict";
    out.appendChild(head);
    const list = document.createElement("ul");
    for (const v of answer.verdicts) {
      line(list, `${v.ok ? "✓" : "✗"} ${v.check}` + (v.ok ? "" : ` — ${T.expected} ${v.expected}; ${T.found} ${v.found}`),
           v.ok ? "ok" : "bad");
    }
    out.appendChild(list);
  } finally {
    setTimeout(() => { check.disabled = false; }, 1000 * Number(document.body.dataset.checkEvery || 10));
  }
});

const hint = document.getElementById("hint");
if (hint) hint.addEventListener("click", async () => {
  const r = await fetch(`${base}/hint`, { method: "POST" });
  const answer = await r.json();
  const hints = document.getElementById("hints");
  hints.textContent = "";
  if (answer.error) { line(hints, answer.error, "bad"); return; }
  line(hints, `${T.hint} ${answer.number}/${answer.of}: ${answer.hint}`);
});

// Which of the student's nodes are down (destroyed, shut off, paused by a drill): said above the
// terminals and on the node's tab, so a student knows it is not their typing. Asked every 10 s.
const health = document.getElementById("lab-health");
async function readHealth() {
  let answer;
  try {
    answer = await (await fetch(`${base}/nodes`)).json();
  } catch (e) {
    return;  // the portal is away: the terminals say so
  }
  if ("ends" in answer) { ends = answer.ends; showClock(); }
  const down = (answer.nodes || []).filter((n) => !n.up);
  document.querySelectorAll(".tab").forEach((b) => {
    b.classList.toggle("down", down.some((n) => n.node === b.dataset.node));
  });
  if (answer.error) health.textContent = answer.error;
  else if (down.length) {
    health.textContent = down.map((n) => `${n.node} ${T.down} (${n.state})`).join("; ") + `: ${T.ask_reset}`;
  } else health.textContent = "";
  health.hidden = !health.textContent;
}
if (health) { readHealth(); setInterval(readHealth, 10000); }

// The class's clock: time left, from the page and then from each /nodes answer (an extension
// arrives within 10 s). At the end the portal closes the terminals; Check still works.
let ends = Number(document.body.dataset.ends) || null;
const clock = document.getElementById("clock");
function showClock() {
  if (!ends) { clock.hidden = true; return; }
  const left = Math.max(0, Math.round((ends * 1000 - Date.now()) / 1000));
  const at = new Date(ends * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const m = Math.floor(left / 60);
  const span = m >= 60 ? `${Math.floor(m / 60)} ${T.h} ${m % 60} ${T.min}` : m ? `${m} ${T.min}` : `${left} ${T.s}`;
  clock.textContent = left > 0 ? `· ${T.left} ${span} (${T.ends} ${at})` : `· ${T.ended} ${at}`;
  clock.className = left > 0 && left < 600 ? "bad" : "dim";
  clock.hidden = false;
}
showClock();
setInterval(showClock, 1000);

// "Restart this exercise" and "Reset my lab": confirmed, then followed step by step.
async function followJob() {
  const list = document.getElementById("job");
  for (;;) {
    let job;
    try { job = await (await fetch(`${base}/job`)).json(); } catch (e) { job = null; }
    if (job && job.what) {
      list.textContent = "";
      for (const s of job.steps) line(list, s);
      if (job.done) {
        line(list, job.ok ? T.done : `✗ ${job.error}`, job.ok ? "ok" : "bad");
        document.querySelectorAll(".self-service button").forEach((b) => { b.disabled = false; });
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
for (const [id, what] of [["restart", "restart"], ["reset-lab", "reset"]]) {
  const button = document.getElementById(id);
  if (!button) continue;
  button.addEventListener("click", async () => {
    if (!window.confirm(button.dataset.confirm)) return;
    const list = document.getElementById("job");
    list.textContent = "";
    const r = await fetch(`${base}/${what}`, { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify({ confirm: true }) });
    const answer = await r.json();
    if (answer.error) { line(list, answer.error, "bad"); return; }
    document.querySelectorAll(".self-service button").forEach((b) => { b.disabled = true; });
    followJob();
  });
}
