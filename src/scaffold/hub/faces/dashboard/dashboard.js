// The hub's dashboard: status, workers, tasks in flight and the live event stream, read with an
// API key through the same REST API as everything else. The key stays in this tab's
// sessionStorage. Every value from the hub is shown with textContent, never parsed as HTML.
"use strict";

const KEY = "vps-hub-key";
const REFRESH_MS = 3000;
const MAX_EVENTS = 200;
const IN_FLIGHT = ["claimed", "ready", "blocked"];

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
}

function fill(tbody, items, columns) {
  tbody.replaceChildren();
  for (const item of items) {
    const row = tbody.insertRow();
    for (const column of columns) cell(row, ...column(item));
  }
}

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
  if (!answer.ok) {
    let message = answer.status + " " + answer.statusText;
    try { message = (await answer.json()).error.message; } catch (_) { /* not the JSON error shape */ }
    throw new Error(message);
  }
  return answer.json();
}

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  return s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

async function refresh() {
  const status = await api("/v1/status");
  const progress = status.progress;
  $("goal").textContent = status.plan.goal ? "Goal: " + status.plan.goal.split("\n")[0] : "No plan yet.";
  $("bar").value = progress.percent;
  $("percent").textContent = progress.done + " / " + progress.total + " done (" + progress.percent + "%)";
  $("counts").replaceChildren(...Object.entries(progress.counts).map(([state, n]) => {
    const item = document.createElement("li");
    item.textContent = state + ": " + n;
    item.className = state;
    return item;
  }));
  $("stuck").textContent = status.stuck.length ? "Stuck (a dependency is dead or cancelled): " + status.stuck.join(", ") : "";
  fill($("workers"), status.workers, [
    (w) => [w.id], (w) => [w.role], (w) => [w.status, w.status], (w) => [w.current_task],
    (w) => [ago(w.last_seen)], (w) => [w.capabilities.join(", ")],
  ]);
  const page = await api("/v1/tasks?limit=100&" + IN_FLIGHT.map((s) => "state=" + s).join("&"));
  fill($("tasks"), page.tasks, [
    (t) => [t.id], (t) => [t.state, t.state], (t) => [t.priority], (t) => [t.attempts + "/" + t.max_attempts],
    (t) => [t.worker_id], (t) => [t.title],
  ]);
}

function showEvent(event) {
  const item = document.createElement("li");
  const parts = [new Date(event.at * 1000).toLocaleTimeString(), event.type];
  if (event.task_id) parts.push("task " + event.task_id);
  if (event.worker_id) parts.push("worker " + event.worker_id);
  if (event.actor) parts.push("by " + event.actor);
  item.textContent = parts.join("  ");
  $("events").prepend(item);
  while ($("events").children.length > MAX_EVENTS) $("events").lastChild.remove();
}

// EventSource cannot send an Authorization header, so the stream is read with fetch.
async function follow(after) {
  const answer = await fetch(after === null ? "/v1/events" : "/v1/events?after=" + after, {
    headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY), Accept: "text/event-stream" },
  });
  if (!answer.ok) throw new Error("events: " + answer.status);
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return after;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5)).join("\n");
      if (!data) continue;
      const event = JSON.parse(data);
      after = event.id;
      showEvent(event);
    }
  }
}

async function watch() {
  $("problem").textContent = "";
  try {
    await refresh();
  } catch (error) {
    $("problem").textContent = "The hub refused: " + error.message;
    $("board").hidden = true;
    return;
  }
  $("board").hidden = false;
  setInterval(() => refresh().catch((error) => { $("problem").textContent = error.message; }), REFRESH_MS);
  let after = null;  // from now on; after a reconnect, from the last event seen
  for (let attempt = 0; attempt < 1000; attempt++) {  // reconnect, bounded
    try {
      after = await follow(after);
    } catch (error) {
      $("problem").textContent = "Event stream: " + error.message + "; reconnecting";
    }
    await new Promise((wake) => setTimeout(wake, 2000));
  }
}

$("login").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  watch();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  location.reload();
});
if (sessionStorage.getItem(KEY)) watch();
