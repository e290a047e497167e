// imgclass capture page: live view, capture (Space / button, burst when held), counts, undo,
// the browser's own camera, and training with a live preview of the new model.
"use strict";

const $ = (id) => document.getElementById(id);
const HOLD_MS = 400;           // holding Space/the button this long starts a burst
const ui = {set: "auto", label: null, mode: "server", state: null, queue: Promise.resolve(), pending: 0,
            burstTimer: null, holdTimer: null, stream: null, previewing: false};

async function api(method, path, body, type) {
  const opts = {method, headers: {"X-Imgclass": "1"}};   // the server refuses POSTs without it (other sites can't add it)
  if (body !== undefined) { opts.body = body; opts.headers["Content-Type"] = type || "application/json"; }
  const res = await fetch(path, opts);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = "message " + (kind || "");
}

// ---- rendering ------------------------------------------------------------------------------
function render(state) {
  ui.state = state;
  $("dataset").textContent = state.dataset;
  if (ui.label === null && state.classes.length) ui.label = state.classes[0];
  renderSets(state);
  renderClasses(state);
  renderThumbs(state.recent);
  renderTrain(state.train, state.preview);
  $("warnings").replaceChildren(...state.warnings.map((w) => Object.assign(document.createElement("li"), {textContent: w})));
  $("src-server").disabled = !state.source.server;
  $("source-name").textContent = ui.mode === "server" ? state.source.name : "browser camera";
  const err = ui.mode === "server" && state.source.error;
  $("frame-message").hidden = !err;
  if (err) $("frame-message").textContent = "input stopped: " + err;
  $("target").innerHTML = ui.label
    ? `→ <b>${ui.set}</b> / <b>${escapeHtml(ui.label)}</b>` : `<span class="warn">add a class first</span>`;
  if (state.preview && !ui.previewing) startPreview();
}

function renderSets(state) {
  const box = $("sets");
  if (box.children.length !== state.sets.length) {
    box.replaceChildren(...state.sets.map((s) => {
      const b = document.createElement("button");
      b.type = "button"; b.dataset.set = s; b.textContent = s;
      b.onclick = () => { ui.set = s; render(ui.state); };
      return b;
    }));
  }
  for (const b of box.children) b.classList.toggle("active", b.dataset.set === ui.set);
}

function renderClasses(state) {
  const totals = {train: 0, val: 0, test: 0};
  const most = Math.max(1, ...state.classes.map((c) => ["train", "val", "test"].reduce((n, s) => n + state.counts[s][c], 0)));
  const rows = state.classes.map((c, i) => {
    const tr = document.createElement("tr");
    tr.dataset.label = c;
    tr.className = c === ui.label ? "selected" : "";
    tr.onclick = () => { ui.label = c; render(ui.state); };
    let total = 0;
    const cells = ["train", "val", "test"].map((s) => {
      const n = state.counts[s][c]; total += n; totals[s] += n;
      return `<td data-count="${s}">${n}</td>`;
    }).join("");
    tr.innerHTML = `<td class="name"><span class="key">${i < 9 ? i + 1 : ""}</span>${escapeHtml(c)}
      <span class="bar" style="width:${Math.round(100 * total / most)}%"></span></td>${cells}<td data-count="total">${total}</td>`;
    return tr;
  });
  $("classes").replaceChildren(...rows);
  for (const s of ["train", "val", "test"]) $("total-" + s).textContent = totals[s];
  $("total-all").textContent = totals.train + totals.val + totals.test;
}

function renderThumbs(recent) {
  const box = $("thumbs");
  $("undo").disabled = !recent.length;
  if (!recent.length) { box.innerHTML = '<p class="hint">nothing captured yet</p>'; return; }
  box.replaceChildren(...recent.map((c) => {
    const fig = document.createElement("figure");
    fig.innerHTML = `<img src="api/image?path=${encodeURIComponent(c.path)}" alt="" loading="lazy">
      <figcaption>${escapeHtml(c.label)} · ${c.set}</figcaption>`;
    fig.title = c.path;
    return fig;
  }));
}

function renderTrain(train, preview) {
  $("train-command").textContent = train.command;
  $("train").disabled = train.state === "running";
  $("train").textContent = train.state === "running" ? "Training…" : preview ? "Train again" : "Train now";
  const label = {idle: "", running: "running", done: "done: live preview on", failed: "failed"}[train.state];
  $("train-state").textContent = label;
  $("train-state").className = "train-state " + train.state;
  const log = $("train-log");
  log.hidden = train.state === "idle";
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = [...train.lines, train.progress, train.error ? "✗ " + train.error : ""].filter(Boolean).join("\n");
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// ---- capturing ------------------------------------------------------------------------------
async function browserFrame(quality) {
  const video = $("webcam"), canvas = $("canvas");
  if (!video.videoWidth) throw new Error("the browser camera has no picture yet");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return new Promise((ok) => canvas.toBlob(ok, "image/jpeg", quality / 100));
}

function capture(burst) {
  if (!ui.label) { say("Add a class first: type its name under Classes.", "error"); return; }
  if (burst && ui.pending) return;   // a burst faster than the server drops ticks, never piles up
  ui.pending++;
  const set = ui.set, label = ui.label, quality = +$("quality").value;
  // one at a time, in order: each press is exactly one saved file
  ui.queue = ui.queue.then(async () => {
    try {
      const body = ui.mode === "browser" ? await browserFrame(quality) : undefined;
      const q = new URLSearchParams({set, class: label, quality});
      render(await api("POST", "api/capture?" + q, body, "image/jpeg"));
      flash();
      say("");
    } catch (e) { say(e.message, "error"); } finally { ui.pending--; }
  });
}

function flash() {
  const f = $("flash");
  f.classList.remove("on"); void f.offsetWidth; f.classList.add("on");
}

function pressStart() {
  if (ui.holdTimer || ui.burstTimer) return;
  capture();
  ui.holdTimer = setTimeout(() => {
    ui.burstTimer = setInterval(() => capture(true), 1000 / +$("burst").value);
  }, HOLD_MS);
}

function pressEnd() {
  clearTimeout(ui.holdTimer); clearInterval(ui.burstTimer);
  ui.holdTimer = ui.burstTimer = null;
}

async function undo() {
  try { render(await api("POST", "api/undo")); say("Last capture deleted."); } catch (e) { say(e.message, "error"); }
}

async function addClass(event) {
  event.preventDefault();
  const input = $("new-class");
  try {
    const state = await api("POST", "api/class", JSON.stringify({name: input.value}));
    ui.label = input.value.trim();
    input.value = "";
    input.blur();   // Space captures right away
    render(state);
    say(`Class "${ui.label}" added.`);
  } catch (e) { say(e.message, "error"); }
}

// ---- sources --------------------------------------------------------------------------------
async function useSource(mode) {
  ui.mode = mode;
  $("src-server").classList.toggle("active", mode === "server");
  $("src-browser").classList.toggle("active", mode === "browser");
  $("live").hidden = mode !== "server";
  $("webcam").hidden = mode !== "browser";
  if (mode === "server") {
    if (ui.stream) { ui.stream.getTracks().forEach((t) => t.stop()); ui.stream = null; }
    $("live").src = "stream.mjpg";
  } else {
    $("live").removeAttribute("src");   // closes the MJPEG connection
    try {
      ui.stream = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}, audio: false});
      $("webcam").srcObject = ui.stream;
    } catch (e) { say("Cannot open this browser's camera: " + e.message, "error"); }
  }
  if (ui.state) render(ui.state);
}

// ---- training and preview -------------------------------------------------------------------
async function train() {
  try { render(await api("POST", "api/train")); } catch (e) { say(e.message, "error"); }
}

async function startPreview() {
  ui.previewing = true;
  const box = $("predictions");
  box.hidden = false;
  while (true) {
    try {
      const body = ui.mode === "browser" ? await browserFrame(85) : undefined;
      const scores = await api(body ? "POST" : "GET", "api/predict", body, "image/jpeg");
      const best = Math.max(...scores.map((s) => s.confidence));
      box.replaceChildren(...scores.map((s) => {
        const row = document.createElement("div");
        row.className = "prediction" + (s.confidence === best ? " best" : "");
        row.innerHTML = `<span>${escapeHtml(s.label)}</span><div class="meter"><i style="width:${(100 * s.confidence).toFixed(1)}%"></i></div>
          <b>${Math.round(100 * s.confidence)}%</b>`;
        return row;
      }));
    } catch (e) { /* the next frame will do */ }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}

// ---- wiring ---------------------------------------------------------------------------------
// Keys belong to text fields while typing; a slider keeps focus after a drag but has no use for Space.
function typing(e) { return e.target.closest("input:not([type=range]), select, textarea"); }

document.addEventListener("keydown", (e) => {
  if (typing(e)) return;
  if (e.code === "Space") { e.preventDefault(); if (!e.repeat) pressStart(); }
  else if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
  else if (/^[1-9]$/.test(e.key) && ui.state && ui.state.classes[+e.key - 1]) {
    ui.label = ui.state.classes[+e.key - 1]; render(ui.state);
  }
});
document.addEventListener("keyup", (e) => { if (e.code === "Space") pressEnd(); });
window.addEventListener("blur", pressEnd);   // a key released in another window must not burst forever

const button = $("capture");
button.addEventListener("pointerdown", (e) => { e.preventDefault(); pressStart(); });
for (const ev of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(ev, pressEnd);
button.addEventListener("keydown", (e) => { if (e.code === "Enter") capture(); });
$("undo").onclick = undo;
$("add-class").onsubmit = addClass;
$("train").onclick = train;
$("copy").onclick = () => navigator.clipboard.writeText($("train-command").textContent).then(() => say("Command copied."));
$("quality").oninput = () => { $("quality-value").textContent = $("quality").value; };
$("src-server").onclick = () => useSource("server");
$("src-browser").onclick = () => useSource("browser");

async function poll() {
  try { render(await api("GET", "api/state")); } catch (e) { say("server unreachable: " + e.message, "error"); }
  const running = ui.state && ui.state.train.state === "running";
  setTimeout(poll, running ? 700 : 2000);
}

// The MJPEG stream never finishes loading: start it after "load" so the page itself counts as loaded.
window.addEventListener("load", async () => {
  const state = await api("GET", "api/state");
  render(state);
  const wanted = new URLSearchParams(location.search).get("source");
  await useSource(wanted === "browser" || !state.source.server ? "browser" : "server");
  if (!state.classes.length) $("new-class").focus();   // nothing to capture into yet: name a class first
  setTimeout(poll, 2000);
});
