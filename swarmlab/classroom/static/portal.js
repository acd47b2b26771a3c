// The student's page: a terminal per node (xterm.js over a websocket to SSH on the node),
// Check and Hint. Everything the server sends is shown as text, never as HTML.
"use strict";
const token = document.body.dataset.token;
const base = `/s/${encodeURIComponent(token)}`;
const terminals = {};

function openTerminal(node) {
  const el = document.getElementById(`term-${node}`);
  const term = new Terminal({ cursorBlink: true, rendererType: "dom", fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${base}/term/${encodeURIComponent(node)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  ws.onmessage = (e) => term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  ws.onclose = () => { el.dataset.closed = "1"; term.write("\r\n[disconnected]\r\n"); };
  term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "input", data })); });
  window.addEventListener("resize", () => {
    fit.fit();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  });
  terminals[node] = { term, ws };
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
  out.textContent = "checking…";
  check.disabled = true;
  try {
    const r = await fetch(`${base}/check`, { method: "POST" });
    const answer = await r.json();
    out.textContent = "";
    if (answer.error) { out.textContent = answer.error; out.className = "bad"; return; }
    const head = document.createElement("p");
    head.textContent = answer.ok ? "✓ all checks pass" : "✗ not yet";
    head.className = answer.ok ? "ok" : "bad";
    head.id = "verdict";
    out.appendChild(head);
    const list = document.createElement("ul");
    for (const v of answer.verdicts) {
      line(list, `${v.ok ? "✓" : "✗"} ${v.check}` + (v.ok ? "" : ` — expected ${v.expected}; found ${v.found}`),
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
  line(hints, `Hint ${answer.number}/${answer.of}: ${answer.hint}`);
});
