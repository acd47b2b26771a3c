// The instructor's page: the class status and the progress board every 5 s; a cell opens the
// student's history; start an exercise for everyone, reset labs.
"use strict";
const base = `/i/${encodeURIComponent(document.body.dataset.token)}`;

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function refresh() {
  let rows;
  try {
    const r = await fetch(`${base}/status`);
    rows = await r.json();
  } catch (e) {  // the portal is restarting: say so, and the next refresh tries again
    document.getElementById("summary").textContent = "the portal does not answer: trying again every 5 s";
    return;
  }
  const body = document.querySelector("#class tbody");
  body.textContent = "";
  if (rows.error) { document.getElementById("summary").textContent = rows.error; return; }
  let healthy = 0;
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.dataset.lab = s.lab;
    cell(tr, s.student, "student");
    cell(tr, s.lab);
    cell(tr, s.host, "dim");
    const down = (s.down || []).length ? ` (${s.down.join(", ")} down)` : "";
    cell(tr, `${s.ready}/${s.nodes}${down}`, s.ready === s.nodes && s.nodes ? "ok" : "bad");
    cell(tr, s.error || s.swarm, s.swarm === "healthy" ? "ok" : "bad");
    if (s.swarm === "healthy") healthy += 1;
    cell(tr, s.exercise || "-");
    const last = s.last_check;
    cell(tr, last ? `${last.ok ? "✓" : "✗"} ${last.exercise} ${last.passed}/${last.of}` : "-",
         last ? (last.ok ? "ok" : "bad") : "dim");
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.textContent = "Reset";
    b.className = "reset";
    b.addEventListener("click", () => act("reset", { lab: s.lab }));
    const w = document.createElement("button");
    w.textContent = "Watch";
    w.className = "watch";
    w.addEventListener("click", () => watch(s));
    td.append(w, " ", b);
    tr.appendChild(td);
    body.appendChild(tr);
  }
  document.getElementById("summary").textContent = `${healthy}/${rows.length} swarms healthy`;
}

async function act(what, body) {
  const busy = document.getElementById("busy");
  busy.textContent = `${what}…`;
  const r = await fetch(`${base}/${what}`, { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(body) });
  const answer = await r.json();
  busy.textContent = answer.error || answer.map((x) => `${x.lab}: ${x.ok ? "ok" : x.error}` +
    (x.ok && x.levels ? ` (${x.levels.join(" then ")}, ${x.seconds.toFixed(1)} s)` : "")).join(" · ");
  refresh();
}

async function refreshBoard() {
  let board;
  try {
    board = await (await fetch(`${base}/board`)).json();
  } catch (e) {
    return;  // refresh() says the portal does not answer
  }
  const head = document.querySelector("#board thead");
  const body = document.querySelector("#board tbody");
  head.textContent = "";
  body.textContent = "";
  const top = document.createElement("tr");
  cell(top, "student");
  for (const x of board.exercises) cell(top, x);
  head.appendChild(top);
  for (const s of board.students) {
    const tr = document.createElement("tr");
    cell(tr, `${s.student} (${s.lab})`, "student");
    for (const c of s.cells) {
      const td = cell(tr, c.brief, `cell ${c.state}`);
      td.tabIndex = 0;
      td.title = `${s.student}: ${c.exercise}`;
      td.addEventListener("click", () => showHistory(s, c.exercise));
    }
    body.appendChild(tr);
  }
}

async function showHistory(student, exercise) {
  const r = await fetch(`${base}/history/${encodeURIComponent(student.lab)}?exercise=${encodeURIComponent(exercise)}`);
  const answer = await r.json();
  const list = document.getElementById("history-events");
  list.textContent = "";
  const shown = (answer.events || []).length;
  const part = answer.total > shown ? ` (the last ${shown} of ${answer.total} events)` : "";
  document.getElementById("history-title").textContent = answer.error || `${student.student}: ${exercise}${part}`;
  for (const e of answer.events || []) {
    const li = document.createElement("li");
    li.className = e.kind;
    li.textContent = `${new Date(e.at * 1000).toLocaleTimeString()}  ${e.text}`;
    list.appendChild(li);
  }
  document.getElementById("history").hidden = false;
}

// Watching a student: their page's shared terminal on one node, read-only until "Take the
// keyboard"; their page shows that the instructor watches or types.
const watching = { ws: null, term: null, fit: null };
function stopWatching() {
  if (watching.ws) { watching.ws.onclose = null; watching.ws.close(); }
  watching.ws = null;
}
async function watch(student) {
  const open = await (await fetch(`${base}/terminals`)).json();
  const mine = open.find((x) => x.lab === student.lab) || { terminals: [], ssh_connections: 0 };
  document.getElementById("watch").hidden = false;
  document.getElementById("watch-student").textContent = `${student.student} (${student.lab})`;
  document.getElementById("watch-note").textContent =
    `${mine.terminals.length} terminal(s) open on their page; ${mine.ssh_connections} SSH connection(s) of their own ` +
    "(listed only)" + (mine.terminals.length ? "" : ": nothing to watch yet");
  const tabs = document.getElementById("watch-tabs");
  tabs.textContent = "";
  for (const t of mine.terminals) {
    const b = document.createElement("button");
    b.className = "tab";
    b.dataset.node = t.node;
    b.textContent = t.node;
    b.addEventListener("click", () => watchNode(student.lab, t.node));
    tabs.appendChild(b);
  }
  if (mine.terminals.length) watchNode(student.lab, mine.terminals[0].node);
}
function watchNode(lab, node) {
  stopWatching();
  document.querySelectorAll("#watch-tabs .tab").forEach((b) => b.classList.toggle("active", b.dataset.node === node));
  if (!watching.term) {
    watching.term = new Terminal({ rendererType: "dom", fontSize: 13, disableStdin: false });
    watching.fit = new FitAddon.FitAddon();
    watching.term.loadAddon(watching.fit);
    watching.term.open(document.getElementById("watch-term"));
    watching.term.onData((data) => {
      if (watching.ws && document.getElementById("keyboard").checked) {
        watching.ws.send(JSON.stringify({ type: "input", data }));
      }
    });
  }
  watching.term.reset();
  watching.fit.fit();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${base}/term/${encodeURIComponent(lab)}/${encodeURIComponent(node)}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "keyboard", take: document.getElementById("keyboard").checked }));
  };
  ws.onmessage = (e) => watching.term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  ws.onclose = () => watching.term.write("\r\n[no longer watching]\r\n");
  watching.ws = ws;
}
document.getElementById("keyboard").addEventListener("change", (e) => {
  if (watching.ws) watching.ws.send(JSON.stringify({ type: "keyboard", take: e.target.checked }));
  if (e.target.checked && watching.term) watching.term.focus();
});
document.getElementById("watch-close").addEventListener("click", () => {
  stopWatching();
  document.getElementById("keyboard").checked = false;
  document.getElementById("watch").hidden = true;
});
document.getElementById("history-close").addEventListener("click", () => {
  document.getElementById("history").hidden = true;
});
document.getElementById("start").addEventListener("click",
  () => act("start", { exercise: document.getElementById("exercise").value }));
document.getElementById("reset-all").addEventListener("click", () => act("reset", {}));
refresh();
refreshBoard();
setInterval(() => { refresh(); refreshBoard(); }, 5000);
