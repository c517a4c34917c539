// gridlb dashboard: renders /api/status (the director's typed status) and follows /api/events.
"use strict";

const $ = (id) => document.getElementById(id);
let actions = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function age(s) {
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function rate(bps) {
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let i = 0;
  while (bps >= 1024 && i < units.length - 1) { bps /= 1024; i++; }
  return (i ? bps.toFixed(1) : Math.round(bps)) + " " + units[i];
}

function spark(points, index, windowS, max, cls) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 24");
  const top = max || Math.max(1, ...points.map((p) => p[index]));
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("class", cls);
  line.setAttribute("points", points.map((p) =>
    ((1 - p[0] / windowS) * 120).toFixed(1) + "," + (22 - (p[index] / top) * 20).toFixed(1)).join(" "));
  const base = document.createElementNS(svgNS, "line");
  base.setAttribute("class", "base");
  base.setAttribute("x1", "0"); base.setAttribute("x2", "120");
  base.setAttribute("y1", "22"); base.setAttribute("y2", "22");
  svg.append(base, line);
  const last = points[points.length - 1];
  if (last) {  // the latest value as a dot: visible even before the line has two points
    const dot = document.createElementNS(svgNS, "circle");
    dot.setAttribute("class", cls);
    dot.setAttribute("r", "2");
    dot.setAttribute("cx", ((1 - last[0] / windowS) * 120).toFixed(1));
    dot.setAttribute("cy", (22 - (last[index] / top) * 20).toFixed(1));
    svg.append(dot);
  }
  const title = document.createElementNS(svgNS, "title");
  title.textContent = cls === "health" ? "health, last hour" : "connections (peak " + top + "), last hour";
  svg.append(title);
  return svg;
}

function stateText(r) {
  if (r.retiring) return "retiring";
  if (r.drained) return "draining";
  return r.reason;
}

function lastCheck(r) {
  const c = r.last_check;
  if (!c) return "-";
  return c.verdict + " " + (c.latency_s * 1000).toFixed(1) + " ms, " + age(c.age_s) + " ago";
}

async function act(op, real) {
  const out = $("action-result");
  try {
    const resp = await fetch("/api/" + op + "?real=" + encodeURIComponent(real), {
      method: "POST", headers: { Authorization: "Bearer " + $("token").value },
    });
    const body = await resp.json();
    out.textContent = resp.ok ? op + " " + real + ": done" : op + " " + real + ": " + body.error;
  } catch (e) {
    out.textContent = op + " " + real + ": " + e;
  }
}

function renderServices(doc) {
  const st = doc.status;
  const hist = new Map(doc.history.reals.map((h) => [h.service + "|" + h.real, h]));
  const windowS = doc.history.window_s;
  const box = $("services");
  const sections = [];
  for (const svc of st.services) {
    const flags = [];
    if (!svc.quorum_up) flags.push("quorum lost");
    if (svc.retiring) flags.push("retiring");
    if (!svc.in_table) flags.push("not in dataplane");
    const head = el("tr", {},
      el("th", {}, "Real server"), el("th", { class: "num" }, "Weight"), el("th", {}, "Health"),
      el("th", {}, "Last check"), el("th", {}, "Reason"), el("th", {}, "State"),
      el("th", { class: "num" }, "Active"), el("th", { class: "num" }, "Inactive"),
      el("th", { class: "num" }, "In"), el("th", { class: "num" }, "Out"),
      el("th", {}, "Connections (1 h)"), el("th", {}, "Health (1 h)"));
    if (actions) head.append(el("th", {}, "Action"));
    const rows = [head];
    for (const r of svc.reals) {
      const h = hist.get(svc.service + "|" + r.real) || { points: [], in_bps: 0, out_bps: 0 };
      const state = stateText(r);
      const reason = r.last_check && r.last_check.verdict !== "up" ? r.last_check.reason
        : (r.passive_failure ? "passive: " + r.passive_failure : "");
      const row = el("tr", { "data-real": r.real, "data-service": svc.service },
        el("td", {}, r.real),
        el("td", { class: "num" }, r.weight === null ? "-" : r.weight),
        el("td", { class: "health-" + r.health, "data-field": "health" }, r.health),
        el("td", { "data-field": "last-check" }, lastCheck(r)),
        el("td", { "data-field": "reason" }, reason),
        el("td", { class: "state-" + state, "data-field": "state" }, state),
        el("td", { class: "num", "data-field": "active" }, r.active),
        el("td", { class: "num" }, r.inactive),
        el("td", { class: "num" }, rate(h.in_bps)),
        el("td", { class: "num" }, rate(h.out_bps)),
        el("td", {}, spark(h.points, 1, windowS, 0, "conns")),
        el("td", {}, spark(h.points, 3, windowS, 1, "health")));
      if (actions) {
        const op = r.drained ? "enable" : "drain";
        const button = el("button", { type: "button" }, op);
        button.addEventListener("click", () => act(op, r.real));
        row.append(el("td", {}, button));
      }
      rows.push(row);
    }
    sections.push(el("h2", {}, svc.service + " " + svc.scheduler + " — " + svc.active + " active, " +
      svc.inactive + " inactive" + (flags.length ? " (" + flags.join(", ") + ")" : "")));
    sections.push(el("table", { class: "service", "data-service": svc.service }, ...rows));
  }
  box.replaceChildren(...sections);
}

function renderVrrp(doc) {
  const vrrp = doc.status.vrrp;
  $("vrrp").hidden = !vrrp;
  if (!vrrp) return;
  $("vrrp-instances").replaceChildren(...vrrp.instances.map((i) => {
    let text = i.name + ": " + (i.state || "INIT") + ", priority " + (i.priority ?? "-") + ", VIPs " +
      (i.vips || []).join(", ") + ", peer " + (i.peers || []).join(", ");
    if (i.master && i.state !== "MASTER") text += ", master " + i.master;
    return el("p", { "data-instance": i.name }, text);
  }));
  $("transitions").replaceChildren(...doc.transitions.slice().reverse().map((t) =>
    el("li", {}, new Date(t.at * 1000).toLocaleTimeString() + " " + t.instance + ": " + t.from + " → " +
      t.to + " (" + t.reason + ")")));
}

function render(doc) {
  const st = doc.status;
  actions = doc.actions;
  $("token-box").hidden = !actions;
  $("summary").textContent = "v" + st.version + " · " + st.dataplane + " dataplane · generation " +
    st.generation + " · up " + age(st.uptime_s) + (st.role ? " · VRRP " + st.role : "") +
    " · updated " + new Date(doc.now * 1000).toLocaleTimeString();
  const alerts = [];
  if (st.dataplane_fault) alerts.push("dataplane failing: " + st.dataplane_fault.error);
  for (const e of st.last_errors) alerts.push("dataplane error: " + e.op + ": " + e.error);
  $("alerts").replaceChildren(...alerts.map((a) => el("p", { class: "alert" }, a)));
  renderVrrp(doc);
  renderServices(doc);
  document.body.dataset.rendered = String(doc.now);
}

function follow() {
  const source = new EventSource("/api/events");
  source.addEventListener("status", (ev) => {
    $("live").className = "live on";
    render(JSON.parse(ev.data));
  });
  source.onerror = () => { $("live").className = "live off"; };
}

fetch("/api/status").then((r) => r.json()).then(render).finally(follow);
