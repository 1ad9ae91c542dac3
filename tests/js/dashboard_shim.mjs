// Runs the hub's dashboard.js in node against a real hub, with the least DOM it needs, then prints
// what the page shows as JSON. node's own fetch does the HTTP, so the script's real requests,
// headers and stream parsing are what is tested.  node dashboard_shim.mjs HUB_URL KEY SCRIPT
import { readFileSync } from "node:fs";

const [hubUrl, key, script] = process.argv.slice(2);

class Element {
  constructor(id = "") { this.id = id; this.children = []; this.textContent = ""; this.value = ""; this.hidden = false;
    this.className = ""; this.listeners = {}; }
  get lastChild() { return this.children[this.children.length - 1]; }
  replaceChildren(...nodes) { this.children = nodes; nodes.forEach((n) => { n.parent = this; }); }
  prepend(node) { node.parent = this; this.children.unshift(node); }
  appendChild(node) { node.parent = this; this.children.push(node); return node; }
  remove() { this.parent.children = this.parent.children.filter((n) => n !== this); }
  insertRow() { const row = new Element(); row.parent = this; this.children.push(row); return row; }
  insertCell() { return this.insertRow(); }
  addEventListener(type, listener) { this.listeners[type] = listener; }
  text() { return this.children.length ? this.children.map((c) => c.text()) : this.textContent; }
}

const elements = {};
globalThis.document = {
  getElementById: (id) => (elements[id] ??= new Element(id)),
  createElement: () => new Element(),
};
const store = {};
globalThis.sessionStorage = { getItem: (k) => store[k] ?? null, setItem: (k, v) => { store[k] = String(v); },
  removeItem: (k) => { delete store[k]; } };
globalThis.location = { reload() {} };
const nodeFetch = globalThis.fetch;
globalThis.fetch = (path, options) => nodeFetch(new URL(path, hubUrl), options);
const timers = [];
const realSetInterval = globalThis.setInterval;
globalThis.setInterval = (fn, ms) => { const t = realSetInterval(fn, ms); timers.push(t); return t; };

(0, eval)(readFileSync(script, "utf8"));
document.getElementById("key").value = key;
elements.login.listeners.submit({ preventDefault() {} });
await new Promise((wake) => setTimeout(wake, Number(process.env.WATCH_MS ?? 2500)));
const shown = Object.fromEntries(["problem", "goal", "percent", "counts", "workers", "tasks", "events", "board",
  "team", "screens", "team-problem"]
  .map((id) => [id, id === "board" ? !document.getElementById(id).hidden : document.getElementById(id).text()]));
shown.keptKey = store["vps-hub-key"] === key && elements.key.value === "";
console.log(JSON.stringify(shown));
process.exit(0);
