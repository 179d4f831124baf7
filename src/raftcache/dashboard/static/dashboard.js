// raftcache dashboard: fetches /dashboard/cluster.json every second and draws it.
//
// Rule: no framework, no build, nothing from another origin, and no innerHTML — every value
// that came from a peer reaches the page through textContent or a numeric SVG attribute, so a
// strange node id cannot inject markup (the page's Content-Security-Policy forbids inline script
// as a second line of defence). Rates are computed here from successive samples: throughput is
// the growth of the cluster's commit index (writes) plus that of every node's reads (hits and
// misses), per second of this browser's clock; the error rate is the growth of the nodes' 5xx
// answers. The quorum card warns when one more failure loses the quorum. Stores hosting many
// Raft groups (view.sharding) get a table of groups × stores and one of stores; the summary then
// counts groups led and sums the groups' commit indexes.
"use strict";

(() => {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 3000; // above the server's per-peer poll bound (0.8 s by default)
  const HISTORY = 60; // samples kept: one minute at one per second
  const LAG_WARN = 100; // entries behind the leader that colour a row's lag
  const TOKEN_KEY = "raftcache.dashboard.token";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    view: null,
    samples: [], // {t, commit, reads, errors}: the cluster's counters at browser time t (ms)
    throughput: [], // ops/s (reads + writes) per poll interval (null when unknown)
    errors: [], // 5xx answers/s per poll interval (null when unknown)
    latency: [], // ms per poll (null when unknown)
    rtt: new Map(), // node id -> [ms or null]
    polls: 0,
    failures: 0,
    lastOk: null,
  };

  // ---- pure helpers (window.raftcacheDashboard exposes them to the browser test) ----

  /** ops/s between two samples {t (ms), commit}; null when it cannot be told. */
  function rate(prev, cur) {
    if (!prev || !cur || !isNum(prev.commit) || !isNum(cur.commit)) return null;
    const seconds = (cur.t - prev.t) / 1000;
    if (!(seconds > 0)) return null;
    // A commit index never goes back; a lower one is another leader's restart: not negative ops.
    return Math.max(cur.commit - prev.commit, 0) / seconds;
  }

  /** Per second increase of `field` between two samples; null when it cannot be told. */
  function counterRate(prev, cur, field) {
    if (!prev || !cur || !isNum(prev[field]) || !isNum(cur[field])) return null;
    const seconds = (cur.t - prev.t) / 1000;
    if (!(seconds > 0)) return null;
    // A counter lower than before is a node restarted (or gone): no negative rate.
    return Math.max(cur[field] - prev[field], 0) / seconds;
  }

  /** ops/s: writes (the commit index) plus reads (every node's hits and misses). */
  function opsRate(prev, cur) {
    const writes = rate(prev, cur);
    const reads = counterRate(prev, cur, "reads");
    if (writes === null) return reads;
    return reads === null ? writes : writes + reads;
  }

  /**
   * Line segments of a sparkline: values (null = gap) scaled into width x height with 0 at the
   * bottom and the newest value at the right edge of `slots` positions.
   * Returns [[[x, y], ...], ...], one list of points per unbroken run.
   */
  function sparklineSegments(values, width, height, slots = HISTORY) {
    const recent = values.slice(-slots);
    const finite = recent.filter(isNum);
    const top = Math.max(0, ...finite) || 1;
    const step = slots > 1 ? width / (slots - 1) : 0;
    const offset = slots - recent.length;
    const segments = [];
    let current = null;
    recent.forEach((v, i) => {
      if (!isNum(v)) {
        current = null;
        return;
      }
      const x = (offset + i) * step;
      const y = height - 1 - (Math.max(v, 0) / top) * (height - 2);
      if (current === null) {
        current = [];
        segments.push(current);
      }
      current.push([round1(x), round1(y)]);
    });
    return segments;
  }

  /** SVG path data of the segments ("M x y L x y ..."). */
  function linePath(segments) {
    return segments
      .map((points) => points.map(([x, y], i) => `${i ? "L" : "M"}${x} ${y}`).join(" "))
      .join(" ");
  }

  /** Closed areas under each segment, down to the baseline at `height`. */
  function areaPath(segments, height) {
    return segments
      .filter((points) => points.length > 1)
      .map((points) => {
        const first = points[0];
        const last = points[points.length - 1];
        return `${linePath([points])} L${last[0]} ${height} L${first[0]} ${height} Z`;
      })
      .join(" ");
  }

  function mean(values) {
    const finite = values.filter(isNum);
    return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
  }

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function round1(v) {
    return Math.round(v * 10) / 10;
  }

  function pushBounded(list, value) {
    list.push(value);
    while (list.length > HISTORY) list.shift();
  }

  function fmt(v, digits = 0) {
    if (!isNum(v)) return "—";
    return digits ? v.toFixed(digits) : String(Math.round(v));
  }

  // ---- recording samples ----

  /** The commit index throughput is measured on: every group's together on stores. */
  function clusterCommit(view) {
    return view.sharding ? view.sharding.commit_index : view.commit_index;
  }

  function record(view, t) {
    const totals = view.totals || {};
    const sample = { t, commit: clusterCommit(view), reads: totals.reads, errors: totals.server_errors };
    const prev = state.samples[state.samples.length - 1];
    pushBounded(state.samples, sample);
    pushBounded(state.throughput, opsRate(prev, sample));
    pushBounded(state.errors, counterRate(prev, sample, "errors"));
    pushBounded(state.latency, clusterLatency(view).value);
    const seen = new Set();
    for (const node of view.nodes) {
      seen.add(node.id);
      if (!state.rtt.has(node.id)) state.rtt.set(node.id, []);
      pushBounded(state.rtt.get(node.id), node.rtt_ms);
    }
    for (const id of [...state.rtt.keys()]) if (!seen.has(id)) state.rtt.delete(id);
    state.view = view;
  }

  /** Replication latency (mean over followers, from the leader), else the poll round trip. */
  function clusterLatency(view) {
    const replication = mean(view.nodes.map((n) => n.replication_ms));
    if (replication !== null) return { value: replication, source: "replication, leader to followers" };
    const rtt = mean(view.nodes.map((n) => n.rtt_ms));
    return { value: rtt, source: "status round trip from the serving node" };
  }

  // ---- drawing ----

  function $(id) {
    return document.getElementById(id);
  }

  function setText(id, text, bad = false) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle("bad", bad);
  }

  function svg(name, attrs) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    return el;
  }

  function drawSpark(target, values) {
    const box = target.viewBox.baseVal;
    const width = box && box.width ? box.width : 300;
    const height = box && box.height ? box.height : 60;
    const segments = sparklineSegments(values, width, height);
    target.replaceChildren(
      svg("line", { class: "base", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }),
      svg("path", { class: "area", d: areaPath(segments, height) }),
      svg("path", { class: "line", d: linePath(segments) }),
    );
    target.dataset.points = String(segments.reduce((n, s) => n + s.length, 0));
  }

  function render(view) {
    const sharding = view.sharding || null;
    if (sharding) renderSummaryOfGroups(sharding);
    else renderSummaryOfNodes(view);
    setText("up", `${view.up} / ${view.total}`, view.up * 2 <= view.total);
    setText("self", view.self === null ? "this node" : view.self);
    const alarms = view.alarms || [];
    setText("alarms", alarms.length ? alarms.map((a) => a.node).join(", ") : "none", alarms.length > 0);
    $("alarms-detail").textContent = alarms.length
      ? alarms.map((a) => `${a.node}: ${a.reason}`).join("; ")
      : "replicas whose state digest differs";

    renderHealth(view);

    setText("throughput", fmt(state.throughput[state.throughput.length - 1], 1));
    const latency = clusterLatency(view);
    setText("latency", fmt(latency.value, 1));
    $("latency-source").textContent = latency.source;
    drawSpark($("throughput-spark"), state.throughput);
    drawSpark($("latency-spark"), state.latency);

    const rows = view.nodes.map((node) => nodeRow(node, view));
    document.querySelector("#nodes tbody").replaceChildren(...rows);
    $("sharding").hidden = !sharding;
    if (sharding) renderGroups(sharding);
  }

  /** Quorum margin, error rate, memory, evictions, version and uptime. */
  function renderHealth(view) {
    const q = quorumText(view);
    setText("quorum", q.text, q.bad);
    $("quorum-detail").textContent = q.detail;
    const errors = state.errors[state.errors.length - 1];
    setText("errors", fmt(errors, 1), isNum(errors) && errors > 0);
    const up = view.nodes.filter((n) => n.reachable);
    const rss = up.map((n) => n.rss_bytes).filter(isNum);
    setText("memory", rss.length ? bytes(Math.max(...rss)) : "—");
    const evictions = up.map((n) => n.evictions).filter(isNum);
    setText("evictions", evictions.length ? fmt(Math.max(...evictions)) : "—");
    const versions = [...new Set(up.map((n) => n.version).filter((v) => typeof v === "string"))];
    setText("version", versions.length ? versions.sort().join(", ") : "—", versions.length > 1);
    const uptimes = up.map((n) => n.uptime_s).filter(isNum);
    $("uptime").textContent = uptimes.length ? `up ${duration(Math.min(...uptimes))} (youngest node)` : "uptime";
  }

  /** What the quorum card says: how many more failures, a warning at none left. */
  function quorumText(view) {
    if (view.sharding) {
      const s = view.sharding;
      const lost = s.quorum_lost || [];
      const risk = s.at_risk || [];
      if (lost.length) return { text: "lost", bad: true, detail: `no quorum in ${lost.join(", ")}` };
      if (risk.length) return { text: "at risk", bad: true, detail: `one more failure loses ${risk.join(", ")}` };
      return { text: "ok", bad: false, detail: "every group survives another failure" };
    }
    const q = view.quorum;
    if (!q || !q.voters) return { text: "—", bad: false, detail: "more failures the cluster survives" };
    if (q.lost) return { text: "lost", bad: true, detail: `${q.up} of ${q.voters} voters up, ${q.needed} needed` };
    if (q.at_risk) return { text: "0", bad: true, detail: "one more failure loses the quorum" };
    return { text: String(q.tolerance), bad: false, detail: `more failures survived (${q.up} of ${q.voters} voters up)` };
  }

  function bytes(v) {
    if (!isNum(v)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${i ? v.toFixed(1) : v} ${units[i]}`;
  }

  function duration(seconds) {
    if (!isNum(seconds)) return "—";
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function setLabels(leader, term, commit) {
    $("leader-label").textContent = leader;
    $("term-label").textContent = term;
    $("commit-label").textContent = commit;
  }

  function setMaxLag(lags) {
    const known = lags.filter(isNum);
    setText("max-lag", known.length ? fmt(Math.max(...known)) : "—", known.some((l) => l >= LAG_WARN));
  }

  function renderSummaryOfNodes(view) {
    setLabels("Leader", "Term", "Commit index");
    const leaders = view.leaders || [];
    let leaderText = view.leader === null ? "none" : view.leader;
    if (leaders.length > 1) leaderText += ` (${leaders.length} claim it)`;
    setText("leader", leaderText, view.leader === null || leaders.length > 1);
    setText("term", fmt(view.term));
    setText("commit", fmt(view.commit_index));
    setMaxLag(view.nodes.map((n) => n.lag));
  }

  function renderSummaryOfGroups(sharding) {
    setLabels("Groups with a leader", "Highest term", "Commit index, all groups");
    const groups = sharding.group_rows;
    const split = groups.filter((g) => (g.leaders || []).length > 1).length;
    let text = `${groups.length - sharding.leaderless.length} / ${sharding.groups}`;
    if (split) text += ` (${split} with 2 claimants)`;
    setText("leader", text, sharding.leaderless.length > 0 || groups.length < sharding.groups || split > 0);
    const terms = groups.map((g) => g.term).filter(isNum);
    setText("term", terms.length ? fmt(Math.max(...terms)) : "—");
    setText("commit", fmt(sharding.commit_index));
    setMaxLag(groups.map((g) => g.max_lag));
  }

  /** Groups x stores: the leader, term and commit of each group, then each store's replica. */
  function renderGroups(sharding) {
    const stores = sharding.stores.map((s) => s.store);
    const head = document.createElement("tr");
    const th = (text, className = "") => {
      const el = document.createElement("th");
      el.scope = "col";
      el.textContent = text;
      if (className) el.className = className;
      return el;
    };
    head.append(th("group"), th("slots"), th("leader"), th("term", "num"), th("commit", "num"));
    for (const store of stores) head.append(th(store, "col-store"));
    head.append(th("max lag", "num"));
    document.querySelector("#groups thead").replaceChildren(head);
    const rows = sharding.group_rows.map((group) => groupRow(group, stores));
    document.querySelector("#groups tbody").replaceChildren(...rows);
    const storeRows = sharding.stores.map((store) => storeRow(store));
    document.querySelector("#stores tbody").replaceChildren(...storeRows);
  }

  function roleBadge(roleName) {
    const badge = document.createElement("span");
    const name = roleName || "unknown";
    badge.className = `role role-${/^[a-z]+$/.test(name) ? name : "unknown"}`;
    badge.textContent = name;
    return badge;
  }

  function lagClass(lag) {
    return isNum(lag) && lag >= LAG_WARN ? "lag-bad" : "";
  }

  function groupRow(group, stores) {
    const tr = document.createElement("tr");
    tr.dataset.group = group.group;
    tr.dataset.leaderless = String(group.leader === null);
    const slots = Array.isArray(group.slots) ? group.slots.join("–") : "—";
    let leader = group.leader === null ? "none" : group.leader;
    if ((group.leaders || []).length > 1) leader += ` (${group.leaders.length} claim it)`;
    tr.append(
      cell(group.group, "col-group"),
      cell(slots, "col-slots"),
      cell(leader, "col-group-leader"),
      cell(fmt(group.term), "num col-term"),
      cell(fmt(group.commit_index), "num col-commit"),
    );
    const byStore = new Map(group.replicas.map((r) => [r.store, r]));
    for (const store of stores) {
      const replica = byStore.get(store);
      if (!replica) {
        const none = cell("·", "replica-none");
        none.dataset.store = store;
        tr.append(none);
        continue;
      }
      const td = cell("", "replica");
      td.dataset.store = store;
      td.dataset.role = replica.role || "unknown";
      td.title = replica.replica ? `replica ${replica.replica}` : "no answer from this store";
      const lag = document.createElement("span");
      lag.className = `lag ${lagClass(replica.lag)}`;
      lag.textContent = isNum(replica.lag) ? `lag ${fmt(replica.lag)}` : "";
      td.append(roleBadge(replica.role), lag);
      tr.append(td);
    }
    tr.append(cell(fmt(group.max_lag), `num col-lag ${lagClass(group.max_lag)}`));
    return tr;
  }

  function storeRow(store) {
    const tr = document.createElement("tr");
    tr.dataset.store = store.store;
    tr.dataset.reachable = String(Boolean(store.reachable));
    tr.append(
      cell(store.store, "node-id"),
      cell(fmt(store.replicas), "num col-replicas"),
      cell(fmt(store.leads), "num col-leads"),
      cell(fmt(store.max_lag), `num col-lag ${lagClass(store.max_lag)}`),
      cell(store.groups.join(" "), "col-hosted"),
    );
    return tr;
  }

  function cell(text, className = "") {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function nodeRow(node, view) {
    const tr = document.createElement("tr");
    tr.dataset.nodeId = node.id;
    tr.dataset.role = node.role || "unknown";
    tr.dataset.reachable = String(Boolean(node.reachable));

    const name = cell("", "col-node");
    const id = document.createElement("span");
    id.className = "node-id";
    id.textContent = node.id;
    name.append(id);
    if (view.self !== null && node.id === view.self) {
      const tag = document.createElement("span");
      tag.className = "self-tag";
      tag.textContent = "this node";
      name.append(tag);
    }
    for (const [text, cls] of [[node.url, "node-url"], [node.error, "node-error"]]) {
      if (!text) continue;
      const line = document.createElement("span");
      line.className = cls;
      line.textContent = text;
      name.append(line);
    }

    const role = cell("", "col-role");
    role.append(roleBadge(node.role));

    const lag = cell(fmt(node.lag), "num col-lag");
    if (isNum(node.lag) && node.lag >= LAG_WARN) lag.classList.add("lag-bad");

    const spark = cell("", "col-spark");
    const chart = svg("svg", { class: "spark", viewBox: "0 0 120 24", preserveAspectRatio: "none" });
    spark.append(chart);
    drawSpark(chart, state.rtt.get(node.id) || []);

    tr.append(
      name,
      role,
      cell(fmt(node.term), "num col-term"),
      cell(node.leader === null || node.leader === undefined ? "—" : node.leader, "col-sees"),
      cell(fmt(node.commit_index), "num col-commit"),
      cell(fmt(node.last_applied), "num col-applied"),
      lag,
      cell(fmt(node.replication_ms, 1), "num col-repl"),
      cell(fmt(node.rtt_ms, 1), "num col-rtt"),
      cell(fmt(node.keys), "num col-keys"),
      cell(fmt(node.evictions), "num col-evictions"),
      cell(bytes(node.rss_bytes), "num col-memory"),
      cell(node.version || "—", "col-version"),
      cell(duration(node.uptime_s), "num col-uptime"),
      spark,
    );
    return tr;
  }

  function setConnection(stateName, text) {
    const el = $("connection");
    el.dataset.state = stateName;
    el.textContent = text;
  }

  // ---- polling ----

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: the token form still works for this page's life
    }
  }

  let memoryToken = null;

  function showTokenForm(rejected) {
    const form = $("token-form");
    form.hidden = false;
    setConnection("auth", rejected ? "the token was refused" : "this node needs a client token");
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    const token = memoryToken || storedToken();
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetch("/dashboard/cluster.json", {
        headers,
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) {
        showTokenForm(Boolean(token));
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const view = await response.json();
      state.polls += 1;
      state.lastOk = new Date();
      record(view, performance.now());
      render(view);
      $("token-form").hidden = true;
      setConnection("live", "live");
      $("updated").textContent = `updated ${state.lastOk.toLocaleTimeString()}`;
    } catch (err) {
      state.failures += 1;
      const since = state.lastOk ? ` since ${state.lastOk.toLocaleTimeString()}` : "";
      const reason = err && err.name === "AbortError" ? "timed out" : String(err && err.message);
      setConnection("stale", `no answer from this node${since} (${reason})`);
    } finally {
      clearTimeout(timer);
      schedule();
    }
  }

  let pending = null;

  function schedule() {
    // setTimeout after each answer, not setInterval: a slow node never piles up requests.
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (document.hidden) schedule(); // a background tab costs the cluster nothing
      else poll();
    }, POLL_MS);
  }

  function start() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      memoryToken = $("token").value.trim() || null;
      try {
        if (memoryToken) sessionStorage.setItem(TOKEN_KEY, memoryToken);
      } catch {
        // storage disabled: memoryToken serves this page
      }
      clearTimeout(pending);
      poll();
    });
    poll();
  }

  window.raftcacheDashboard = { rate, counterRate, opsRate, sparklineSegments, linePath, mean, state };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
