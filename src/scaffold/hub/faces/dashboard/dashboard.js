// The hub's dashboard: status, spend and budgets, the team's slots with their live screens, workers,
// tasks in flight and the live event stream, read with an API key through the same REST API as everything else. The key stays in this tab's
// sessionStorage. Every value from the hub is shown with textContent, never parsed as HTML.
"use strict";

const KEY = "vps-hub-key";
const REFRESH_MS = 3000;
const MAX_EVENTS = 200;
const IN_FLIGHT = ["claimed", "ready", "blocked"];
const TEAM_MS = 1000;
const TEAM_COLUMNS = 8;
const TOP_TASKS = 20;
const ASIDE = ["between-tasks", "coordinator"];  // the usage rows that are no task
// hub.toml [budget] as /v1/status `usage.budget` shows it: each limit's usd and tokens (null: none).
const BUDGETS = [["fleet_day", "fleet per day"], ["worker_day", "worker per day"], ["task", "task"]];

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
    const error = new Error(message);
    error.status = answer.status;
    throw error;
  }
  return answer.json();
}

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  return s < 90 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

// Dollars: four decimals below $1, where a request costs fractions of a cent; cents above.
function usd(x) {
  if (x === null || x === undefined) return null;
  if (Math.abs(x) < 1) return "$" + x.toFixed(4);
  return "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function tokens(n) {
  return n === null || n === undefined ? null : n.toLocaleString("en-US");
}

function idle(seconds) {
  return seconds < 90 ? Math.round(seconds) + " s" : Math.round(seconds / 60) + " min";
}

// The team: one row per slot and, under it, its screen. Rows are made again only when the slots
// change, so a screen keeps its scroll position and selection between refreshes; a screen is
// fetched only when its screen_at moved, and not at all once the hub said this key may not see
// screens (they need the role `[team] screen_role` names; docs/security.md says why).
const team = { order: null, rows: {}, shown: {}, refused: null };

function screenPath(slot) {
  return "/v1/team/slots/" + encodeURIComponent(slot) + "/screen";
}

function changedScreens(slots, shown) {
  return slots.filter((s) => s.screen_at !== null && shown[s.slot] !== s.screen_at).map((s) => s.slot);
}

function slotCells(slot) {
  const worker = slot.worker;
  return [
    [slot.slot], [slot.host], [slot.role], [slot.state, slot.state],
    [worker ? worker.id + " (" + worker.status + ")" : null, worker ? worker.status : ""],
    [worker ? worker.current_task : null],
    [worker && worker.status === "idle" ? idle(worker.idle_seconds) : null], [slot.restarts],
  ];
}

function showTeam(slots) {
  const body = $("team");
  const order = slots.map((s) => s.slot).join(" ");
  if (order !== team.order) {
    body.replaceChildren();
    team.rows = {};
    team.shown = {};
    for (const slot of slots) {
      const info = body.insertRow();
      const cell = body.insertRow().insertCell();
      cell.colSpan = TEAM_COLUMNS;
      const screen = document.createElement("pre");
      screen.className = "screen";
      screen.textContent = "(no screen yet)";
      cell.appendChild(screen);
      team.rows[slot.slot] = { info, screen };
    }
    team.order = order;
  }
  for (const slot of slots) {
    const { info, screen } = team.rows[slot.slot];
    info.replaceChildren();
    for (const column of slotCells(slot)) cell(info, ...column);
    screen.hidden = team.refused !== null;
  }
  $("team-empty").hidden = slots.length > 0;
}

async function showScreen(slot, at) {
  const screen = team.rows[slot].screen;
  const following = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 4;
  screen.textContent = (await api(screenPath(slot))).text;
  team.shown[slot] = at;
  if (following) screen.scrollTop = screen.scrollHeight;  // a terminal's news is at the bottom
}

async function refreshTeam() {
  const slots = (await api("/v1/team")).slots;
  showTeam(slots);
  if (team.refused !== null) return;
  const at = Object.fromEntries(slots.map((s) => [s.slot, s.screen_at]));
  for (const slot of changedScreens(slots, team.shown)) {
    try {
      await showScreen(slot, at[slot]);
    } catch (error) {
      if (error.status === 403) {
        team.refused = error.message;
        $("screens").textContent = "Screens are hidden: " + error.message;
        showTeam(slots);
        return;
      }
      if (error.status !== 404) throw error;  // 404: the slot went away since the listing
    }
  }
}

async function followTeam() {
  for (;;) {
    try {
      await refreshTeam();
      $("team-problem").textContent = "";
    } catch (error) {
      $("team-problem").textContent = "Team: " + error.message;
    }
    await new Promise((wake) => setTimeout(wake, TEAM_MS));
  }
}

// Spend: today's total and burn rate and the budget state come with the status; the tables are
// all-time, from GET /v1/usage (highest cost first, as the hub sorts them).
function showToday(usage) {
  const today = usage.today;
  $("spend-today").textContent = "Today (UTC): " + usd(today.cost_usd) + " in " + tokens(today.requests) +
    " requests, " + tokens(today.tokens) + " tokens; burn rate " + usd(usage.burn_usd_per_hour) +
    "/h (the last hour)";
}

function share(part, whole) {
  return part === null ? "" : " (" + Math.round(100 * part / whole) + "% today)";
}

function showBudget(budget, today) {
  const limits = [];
  for (const [name, what] of BUDGETS) {
    const limit = budget[name];
    const spent = name === "fleet_day" ? today : null;  // the status has the fleet's day, not a worker's
    if (limit.usd) limits.push(what + " " + usd(limit.usd) + share(spent && spent.cost_usd, limit.usd));
    if (limit.tokens) limits.push(what + " " + tokens(limit.tokens) + " tokens" + share(spent && spent.tokens, limit.tokens));
  }
  if (budget.task.usd || budget.task.tokens) limits.push("a task over its budget: " + budget.task_action);
  const stopped = budget.claims === "stopped";
  $("budget").textContent = stopped ? "Claims stopped: " + (budget.reason || "a budget is spent") : "Claims open";
  $("budget").className = stopped ? "budget-stopped" : "";
  $("budgets").textContent = limits.length ? "Budgets: " + limits.join(", ") : "No budgets set";
}

function showSpendTables(byTask, byWorker) {
  const tasks = byTask.rows.filter((row) => !ASIDE.includes(row.key));
  const shown = [...tasks.slice(0, TOP_TASKS), ...byTask.rows.filter((row) => ASIDE.includes(row.key))];
  fill($("spend-tasks"), shown, [
    (r) => [ASIDE.includes(r.key) ? null : r.key], (r) => [r.state, r.state], (r) => [r.worker_id],
    (r) => [tokens(r.requests)], (r) => [tokens(r.tokens)], (r) => [usd(r.cost_usd)],
    (r) => [r.label, ASIDE.includes(r.key) ? "aside" : ""],
  ]);
  // The hub sends the costliest rows only (100): what the table leaves out is the total less what it shows.
  const left = byTask.total.cost_usd - shown.reduce((sum, row) => sum + row.cost_usd, 0);
  $("spend-more").textContent = tasks.length > TOP_TASKS ? "Other tasks: " + usd(Math.max(0, left)) : "";
  fill($("spend-workers"), byWorker.rows, [
    (r) => [r.label, r.key === "coordinator" ? "aside" : ""], (r) => [tokens(r.requests)], (r) => [tokens(r.tokens)],
    (r) => [usd(r.tasks_cost_usd)], (r) => [usd(r.between_tasks_cost_usd)],
    (r) => [r.runs && r.runs.count ? r.runs.count + " runs, " + usd(r.runs.cost_usd) : null],
    (r) => [usd(r.cost_usd)],
  ]);
  const total = byTask.total;
  // The metrics and the headless runs' own results are counted apart: shown as a cross-check.
  $("spend-total").textContent = "All time: " + usd(total.cost_usd) + " in " + tokens(total.requests) +
    " requests, " + tokens(total.tokens) + " tokens. Cross-check: the metrics say " +
    usd(byTask.metrics.cost_usd) + " and " + tokens(byTask.metrics.tokens) + " tokens; headless runs reported " +
    usd(byTask.runs.cost_usd) + " in " + byTask.runs.count + " runs";
}

async function refreshSpend(usage) {
  if (!usage) throw new Error("this hub does not report usage");
  showToday(usage);
  showBudget(usage.budget, usage.today);
  const [byTask, byWorker] = await Promise.all([api("/v1/usage?by=task"), api("/v1/usage?by=worker")]);
  showSpendTables(byTask, byWorker);
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
  try {  // the rest of the board stands without it
    await refreshSpend(status.usage);
    $("spend-problem").textContent = "";
  } catch (error) {
    $("spend-problem").textContent = "Spend: " + error.message;
  }
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
  followTeam();
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
