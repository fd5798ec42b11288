// The syncbridge operator dashboard. Vanilla JS, no build step.
//
// Everything shown comes from the admin API with the token the operator
// pasted (kept in sessionStorage: this tab only). Data goes into the page
// with textContent / createElement only — webhook payloads are written by
// outsiders — never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "syncbridge.adminToken";
  const REFRESH_MS = 3000;
  const PROGRESS_MS = 700;

  const $ = (id) => document.getElementById(id);
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    token = null;
  }
  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let lastRefresh = null;
  // Last rendered data per panel: a panel is redrawn only when it changed,
  // so a button is not replaced under the operator's pointer.
  const shown = {};
  // Pull runs started from this page: provider -> {result, error}.
  const pullRuns = {};
  // The pulled providers' progress as last read.
  let pulls = {};
  const progressTimers = {};
  let openEvent = null;

  // ---- DOM helpers ----------------------------------------------------

  // el("td", {class: "num", text: 3, data: {status: "pending"}}, child...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "class") e.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === "hidden" || k === "disabled") e[k] = Boolean(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setText(id, text) {
    $(id).textContent = text === undefined || text === null ? "" : String(text);
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  // A value of either side of a conflict (or any API value) as text.
  function valueText(v) {
    if (v === null || v === undefined) return "∅";
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }

  function humanize(key) {
    const words = String(key)
      .replace(/_/g, " ")
      .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
      .toLowerCase();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function ago(iso) {
    const t = Date.parse(iso);
    if (!isFinite(t)) return "never";
    const s = (Date.now() - t) / 1000;
    return s < 1 ? "just now" : age(s) + " ago";
  }

  // A <time> whose "… ago" text the ticker keeps current.
  function timeEl(iso) {
    if (!iso) return el("span", { class: "muted", text: "never" });
    return el("time", { datetime: iso, title: iso, text: ago(iso) });
  }

  function tickTimes() {
    for (const t of document.querySelectorAll("time[datetime]")) {
      t.textContent = ago(t.getAttribute("datetime"));
    }
    if (lastRefresh) setText("refreshed", "updated " + ago(lastRefresh.toISOString()));
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function shortId(id) {
    const s = String(id);
    return s.length > 13 ? s.slice(0, 8) + "…" : s;
  }

  function note(id, text, isError) {
    const n = $(id);
    n.textContent = text || "";
    n.classList.toggle("error", Boolean(isError));
  }

  // ---- API ------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && (body.detail || body.error);
      super(detail ? String(detail) : "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { detail: "syncbridge is not answering (" + e.message + ")" });
    }
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    if (r.status === 401) {
      signOut("The token was refused: paste it again.");
      throw new ApiError(401, data);
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ---- token ----------------------------------------------------------

  function signIn(t) {
    token = t;
    show("login", false);
    show("dashboard", true);
    show("sign-out", true);
    show("refreshed", true);
    refresh();
  }

  function signOut(message) {
    token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage unavailable: nothing kept */
    }
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = null;
    for (const p of Object.keys(progressTimers)) stopProgress(p);
    pulls = {};
    // Nothing from the API stays in the page.
    for (const id of ["sync-rows", "record-rows", "pulls", "conflicts", "failed-rows", "event-rows", "integrity-rows", "integrity-errors"]) {
      clear($(id));
    }
    for (const k of Object.keys(shown)) delete shown[k];
    openEvent = null;
    show("event-detail", false);
    show("dashboard", false);
    show("sign-out", false);
    show("refreshed", false);
    show("health", false);
    show("login", true);
    $("token").value = "";
    const err = $("login-error");
    err.textContent = message || "";
    err.hidden = !message;
    $("token").focus();
  }

  async function submitToken(ev) {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    const button = $("login-submit");
    button.disabled = true;
    token = t;
    try {
      await api("GET", "/api/sync/status");
      try {
        sessionStorage.setItem(TOKEN_KEY, t);
      } catch (_) {
        /* kept in memory only */
      }
      $("login-error").hidden = true;
      signIn(t);
    } catch (e) {
      if (e.status !== 401) {
        token = null;
        const err = $("login-error");
        err.textContent = e.message;
        err.hidden = false;
      }
    } finally {
      button.disabled = false;
    }
  }

  // ---- refresh loop ---------------------------------------------------

  async function refresh() {
    if (!token) return;
    if (refreshing) {
      // An action asked while a refresh was out: go again right after.
      refreshAgain = true;
      return;
    }
    refreshing = true;
    refreshAgain = false;
    if (refreshTimer) clearTimeout(refreshTimer);
    const status = $("events-status").value;
    const eventsPath = "/api/sync/events?limit=25" + (status ? "&status=" + encodeURIComponent(status) : "");
    const calls = [
      api("GET", "/api/sync/status").then(renderStatus),
      api("GET", "/api/sync/conflicts?limit=50").then(renderConflicts),
      api("GET", "/api/sync/outbox?status=failed&limit=100").then(renderFailed),
      api("GET", eventsPath).then(renderEvents),
    ];
    const results = await Promise.allSettled(calls);
    refreshing = false;
    if (!token) return;
    const failed = results.find((r) => r.status === "rejected");
    const banner = $("api-error");
    if (failed) {
      banner.textContent = "Could not refresh: " + failed.reason.message;
      banner.hidden = false;
    } else {
      banner.hidden = true;
      lastRefresh = new Date();
      tickTimes();
    }
    refreshTimer = setTimeout(refresh, refreshAgain ? 0 : REFRESH_MS);
  }

  // Redraws only when the data differs from what is on the page.
  function changed(panel, data) {
    const s = JSON.stringify(data);
    if (shown[panel] === s) return false;
    shown[panel] = s;
    return true;
  }

  // ---- status: tiles, last sync, records, health, pulls, integrity -----

  function sum(values) {
    return values.reduce((a, b) => a + (Number(b) || 0), 0);
  }

  function maxAge(values) {
    const v = values.filter((x) => typeof x === "number");
    return v.length ? Math.max(...v) : null;
  }

  function renderStatus(s) {
    const inbound = s.inbound || {};
    const outbound = s.outbound || {};
    const outTables = [];
    for (const [provider, tables] of Object.entries(outbound)) {
      for (const [table, t] of Object.entries(tables || {})) outTables.push({ provider, table, t });
    }
    const inPending = sum(Object.values(inbound).map((p) => p.pending));
    const outPending = sum(outTables.map((o) => o.t.pending));
    const inFailed = sum(Object.values(inbound).map((p) => p.failed));
    const outFailed = sum(outTables.map((o) => o.t.failed));
    const oldest = maxAge(
      Object.values(inbound).map((p) => p.oldest_pending_age_s).concat(outTables.map((o) => o.t.oldest_pending_age_s))
    );
    setText("count-pending", inPending + outPending);
    $("count-pending").dataset.inbound = inPending;
    $("count-pending").dataset.outbound = outPending;
    setText("oldest-pending", oldest === null ? "nothing waiting" : "oldest " + age(oldest));
    setText("count-failed", inFailed + outFailed);
    setText("failed-split", inFailed + " inbound · " + outFailed + " outbound");
    const conflicts = s.conflicts || {};
    setText("count-conflicts", conflicts.open || 0);
    setText("oldest-conflict", conflicts.oldest_open_age_s === undefined ? "" : "oldest " + age(conflicts.oldest_open_age_s));
    setText("count-backlog", s.backlog || 0);

    const health = s.health || {};
    const badge = $("health");
    badge.hidden = false;
    badge.className = "badge " + (health.ok ? "ok" : "bad");
    const problems = Object.entries(health.problems || {}).map(([k, v]) => k + ": " + v);
    badge.textContent = health.ok ? "healthy" : "problems";
    badge.title = problems.join("\n") || "listener " + (health.listener || "?");

    renderSync(s, outTables);
    renderRecords(s.records || {});
    renderPulls(s.pulls || {});
    renderIntegrity(s.integrity);
  }

  function renderSync(s, outTables) {
    const rows = [];
    const providers = new Set(
      Object.keys(s.providers || {})
        .concat(Object.keys(s.inbound || {}))
        .concat(Object.keys(s.outbound || {}))
        .concat(Object.keys(s.pulls || {}))
    );
    for (const p of [...providers].sort()) {
      const webhooks = (s.providers || {})[p];
      const inb = (s.inbound || {})[p];
      if (inb || (webhooks && webhooks.webhooks === "enabled")) {
        rows.push({
          provider: p,
          direction: "inbound",
          label: "in · events",
          last: inb ? inb.last_applied_at || null : null,
          pending: inb ? inb.pending : 0,
          failed: inb ? inb.failed : 0,
          oldest: inb ? inb.oldest_pending_age_s : undefined,
        });
      } else if (webhooks && webhooks.webhooks !== "enabled" && !(s.pulls || {})[p]) {
        rows.push({ provider: p, direction: "inbound", label: "in · events", disabled: webhooks.webhooks });
      }
      const pull = (s.pulls || {})[p];
      if (pull) {
        rows.push({
          provider: p,
          direction: "pull",
          label: "in · pull",
          last: pull.finishedAt || null,
          running: pull.running,
        });
      }
      const out = outTables.filter((o) => o.provider === p);
      if (out.length) {
        const lasts = out.map((o) => o.t.last_pushed_at).filter(Boolean).sort();
        rows.push({
          provider: p,
          direction: "outbound",
          label: "out · pushes",
          last: lasts.length ? lasts[lasts.length - 1] : null,
          pending: sum(out.map((o) => o.t.pending)),
          failed: sum(out.map((o) => o.t.failed)),
          oldest: maxAge(out.map((o) => o.t.oldest_pending_age_s)),
        });
      }
    }
    if (!changed("sync", rows)) return;
    const body = $("sync-rows");
    clear(body);
    for (const r of rows) {
      const last = r.disabled
        ? el("span", { class: "muted", text: "disabled: " + r.disabled })
        : r.running
          ? el("span", { class: "badge run", text: "running" })
          : timeEl(r.last);
      body.append(
        el(
          "tr",
          { data: { provider: r.provider, direction: r.direction } },
          el("td", { text: r.provider }),
          el("td", { text: r.label }),
          el("td", { class: r.disabled ? "grow" : "" }, last),
          el("td", { class: "num", data: { count: "pending", label: "pending" }, text: r.pending === undefined ? "" : r.pending }),
          el("td", { class: "num" + (r.failed ? " warn" : ""), data: { count: "failed", label: "failed" }, text: r.failed === undefined ? "" : r.failed }),
          el("td", { data: { label: "oldest" }, text: r.oldest === undefined || r.oldest === null ? "" : age(r.oldest) })
        )
      );
    }
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No provider is enabled." })));
  }

  function renderRecords(records) {
    if (!changed("records", records)) return;
    const body = $("record-rows");
    clear(body);
    for (const [table, t] of Object.entries(records).sort()) {
      const cell = (k) => el("td", { class: "num" + ((k === "failed" || k === "conflict") && t[k] ? " warn" : ""), data: { status: k }, text: t[k] || 0 });
      body.append(
        el(
          "tr",
          { data: { table } },
          el("td", { text: table }),
          cell("synced"),
          cell("pending"),
          cell("failed"),
          cell("conflict"),
          cell("skipped"),
          el("td", {}, timeEl(t.last_synced_at))
        )
      );
    }
  }

  // ---- pulls ("Sync all calls") ----------------------------------------

  function renderPulls(all) {
    pulls = all;
    const names = Object.keys(all).sort();
    show("pull-panel", names.length > 0);
    const box = $("pulls");
    for (const section of [...box.children]) {
      if (!names.includes(section.dataset.pull)) section.remove();
    }
    for (const p of names) {
      const progress = all[p];
      const run = pullRuns[p] || null;
      let section = box.querySelector('div[data-pull="' + CSS.escape(p) + '"]');
      if (!section) {
        // Made once, so the dry-run box keeps its tick across refreshes.
        const button = el("button", { type: "button", id: "sync-all-" + p, class: "primary", on: { click: () => startPull(p) } });
        const dry = el("input", { type: "checkbox", id: "dry-run-" + p });
        section = el(
          "div",
          { class: "pull", data: { pull: p } },
          el("h3", { text: p }),
          el("div", { class: "actions" }, button, el("label", { class: "check" }, dry, " dry run")),
          el("div", { class: "progress-box" })
        );
        box.append(section);
      }
      const button = section.querySelector("button");
      button.textContent = "Sync all " + (progress.unit || "items");
      button.disabled = Boolean(progress.running || (run && !run.result && !run.error));
      // Keyed on what is shown: the POST's answer repeating the polled
      // summary redraws nothing.
      const view = progressState(progress, run);
      if (changed("pull-" + p, view)) {
        section.querySelector(".progress-box").replaceWith(progressView(view));
      }
    }
  }

  function progressState(progress, run) {
    const state = {
      running: Boolean(progress.running),
      dryRun: Boolean(progress.dryRun),
      pages: progress.pages || 0,
      seen: progress.seen || 0,
      unit: progress.unit || "items",
      finishedAt: progress.finishedAt || null,
    };
    if (!state.running) {
      state.error = (run && run.error) || progress.error || null;
      state.summary = (run && run.result) || progress.summary || null;
    }
    return state;
  }

  function progressView(v) {
    const wrap = el("div", { class: "progress-box" });
    if (v.running) {
      wrap.append(
        el("progress", { class: "bar" }),
        el("p", {
          class: "progress-text",
          text: "Running" + (v.dryRun ? " (dry run)" : "") + ": " + plural(v.pages, "page") + " fetched, " + v.seen + " " + v.unit + " listed",
        })
      );
      return wrap;
    }
    if (v.error) wrap.append(el("p", { class: "error", text: v.error }));
    if (v.summary) {
      const when = v.finishedAt ? el("span", {}, ", finished ", timeEl(v.finishedAt)) : null;
      wrap.append(el("p", { class: "muted" }, v.dryRun ? "Last run (dry run)" : "Last run", when, ": " + v.seen + " " + v.unit + " listed in " + plural(v.pages, "page") + "."));
      wrap.append(summaryView(v.summary));
    } else if (!v.error) {
      wrap.append(el("p", { class: "muted", text: "Not run yet." }));
    }
    return wrap;
  }

  // A summary's totals first, then its other counts, then its breakdowns
  // and lists.
  function summaryOrder([a, av], [b, bv]) {
    const rank = (k, v) => (Array.isArray(v) ? 3 : v && typeof v === "object" ? 2 : /^total/.test(k) ? 0 : 1);
    return rank(a, av) - rank(b, bv) || a.localeCompare(b);
  }

  function summaryView(summary) {
    const dl = el("dl", { class: "summary" });
    for (const [k, v] of Object.entries(summary).sort(summaryOrder)) {
      let value;
      if (Array.isArray(v)) {
        value = v.length ? el("ul", { class: "error-list" }, ...v.map((x) => el("li", { text: valueText(x) }))) : el("span", { text: "none" });
      } else if (v && typeof v === "object") {
        const entries = Object.entries(v);
        value = entries.length ? el("ul", {}, ...entries.map(([a, b]) => el("li", { data: { key: a } }, el("span", { text: a + ": " }), el("strong", { text: valueText(b) })))) : el("span", { text: "none" });
      } else {
        value = el("strong", { text: valueText(v) });
      }
      dl.append(el("dt", { text: humanize(k) }), el("dd", { data: { key: k } }, value));
    }
    return dl;
  }

  async function startPull(p) {
    const dry = $("dry-run-" + p);
    const query = dry && dry.checked ? "?dryRun=true" : "";
    pullRuns[p] = { result: null, error: null };
    const button = $("sync-all-" + p);
    if (button) button.disabled = true;
    startProgress(p);
    try {
      const summary = await api("POST", "/api/" + encodeURIComponent(p) + "/sync-all" + query);
      pullRuns[p] = { result: summary, error: null };
    } catch (e) {
      if (e.status === 409 && e.body && e.body.progress) {
        // One runs already (from elsewhere): follow it.
        delete pullRuns[p];
        return;
      }
      pullRuns[p] = { result: null, error: "The run failed: " + e.message };
    }
    stopProgress(p);
    await pollProgress(p);
    refresh();
  }

  function startProgress(p) {
    if (progressTimers[p]) return;
    progressTimers[p] = setInterval(() => pollProgress(p), PROGRESS_MS);
    pollProgress(p);
  }

  function stopProgress(p) {
    if (progressTimers[p]) clearInterval(progressTimers[p]);
    delete progressTimers[p];
  }

  async function pollProgress(p) {
    if (!token) return;
    try {
      const progress = await api("GET", "/api/" + encodeURIComponent(p) + "/sync-all");
      renderPulls(Object.assign({}, pulls, { [p]: progress }));
      if (!progress.running && !pullRuns[p]) stopProgress(p);
    } catch (_) {
      /* the next refresh shows the error */
    }
  }

  // ---- conflicts --------------------------------------------------------

  function renderConflicts(data) {
    const list = data.conflicts || [];
    setText("conflicts-count", list.length);
    show("conflicts-empty", list.length === 0);
    const box = $("conflicts");
    const ids = new Set(list.map((c) => String(c.id)));
    // Cards are kept by id, so a merge being typed survives refreshes.
    for (const card of [...box.children]) {
      if (!ids.has(card.dataset.id) && !card.classList.contains("done")) card.remove();
    }
    for (const c of list) {
      if (!box.querySelector('article[data-id="' + CSS.escape(String(c.id)) + '"]')) box.append(conflictCard(c));
    }
  }

  function conflictCard(c) {
    const local = c.supabase_data || {};
    const remote = c.keap_data || {};
    const fields = (c.conflict_fields && c.conflict_fields.length ? c.conflict_fields : Object.keys(remote)).slice();
    const others = [...new Set(Object.keys(local).concat(Object.keys(remote)))].filter((k) => !fields.includes(k)).sort();
    const card = el("article", { class: "conflict", data: { id: c.id } });
    card.append(
      el(
        "header",
        {},
        el("strong", { text: c.entity_type + " " }),
        el("code", { title: String(c.entity_id), text: shortId(c.entity_id) }),
        el("span", { class: "badge", text: c.provider }),
        el("span", { class: "muted" }, "detected ", timeEl(c.detected_at))
      )
    );
    const rows = fields.map((f) => {
      const input = el("input", {
        type: "text",
        class: "merge",
        "aria-label": "merged " + f,
        data: { field: f },
      });
      input.value = local[f] === null || local[f] === undefined ? "" : valueText(local[f]);
      return el(
        "tr",
        { data: { field: f } },
        el("th", { scope: "row", text: f }),
        el("td", { class: "local", text: valueText(local[f]) }),
        el("td", { class: "remote", text: valueText(remote[f]) }),
        el("td", {}, input)
      );
    });
    card.append(
      el(
        "div",
        { class: "scroll" },
        el(
          "table",
          { class: "versions" },
          el("thead", {}, el("tr", {}, el("th", { text: "Field" }), el("th", { text: "Local (this database)" }), el("th", { text: "Remote (" + c.provider + ")" }), el("th", { text: "Merged" }))),
          el("tbody", {}, ...rows)
        )
      )
    );
    if (others.length) {
      const differs = others.filter((k) => JSON.stringify(local[k]) !== JSON.stringify(remote[k]));
      card.append(
        el(
          "details",
          {},
          el("summary", { text: others.length + " other fields (" + differs.length + " differ)" }),
          el(
            "div",
            { class: "scroll" },
            el(
              "table",
              { class: "versions" },
              el("tbody", {}, ...others.map((k) => el("tr", { class: differs.includes(k) ? "differs" : "" }, el("th", { scope: "row", text: k }), el("td", { text: valueText(local[k]) }), el("td", { text: valueText(remote[k]) }))))
            )
          )
        )
      );
    }
    const status = el("span", { class: "note" });
    const act = (resolution, label, cls) =>
      el("button", { type: "button", class: cls, data: { action: resolution }, text: label, on: { click: () => resolve(card, c, resolution, fields, status) } });
    card.append(el("div", { class: "actions" }, act("local", "Keep local", "quiet"), act("remote", "Take remote", "quiet"), act("merged", "Save merge", "primary"), status));
    return card;
  }

  // The merged value of a field: what the operator typed, keeping the
  // type of the side it matches (or a number/object typed as JSON where
  // the field is not text).
  function mergedValue(text, localValue, remoteValue) {
    for (const v of [localValue, remoteValue]) {
      if (v !== undefined && (v === null ? text === "" : valueText(v) === text)) return v;
    }
    const texty = [localValue, remoteValue].some((v) => typeof v === "string");
    if (!texty) {
      try {
        return JSON.parse(text);
      } catch (_) {
        /* not JSON: text */
      }
    }
    return text === "" && !texty ? null : text;
  }

  async function resolve(card, c, resolution, fields, status) {
    const body = { resolution };
    if (resolution === "merged") {
      const data = {};
      for (const f of fields) {
        const input = card.querySelector('input[data-field="' + CSS.escape(f) + '"]');
        data[f] = mergedValue(input.value, (c.supabase_data || {})[f], (c.keap_data || {})[f]);
      }
      body.data = data;
    }
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    status.textContent = "Resolving…";
    status.classList.remove("error");
    try {
      const r = await api("POST", "/api/sync/conflicts/" + encodeURIComponent(c.id) + "/resolve", body);
      card.classList.add("done");
      status.textContent = "Resolved: " + (r.resolution || resolution);
      setTimeout(() => card.remove(), 1500);
      refresh();
    } catch (e) {
      status.textContent = e.message;
      status.classList.add("error");
      for (const b of card.querySelectorAll("button")) b.disabled = false;
    }
  }

  // ---- failed pushes ----------------------------------------------------

  function renderFailed(data) {
    const list = data.changes || [];
    setText("failed-count", list.length);
    show("failed-empty", list.length === 0);
    show("failed-table", list.length > 0);
    show("retry-all", list.length > 1);
    if (!changed("failed", list)) return;
    const body = $("failed-rows");
    clear(body);
    for (const o of list) {
      const retry = el("button", { type: "button", data: { action: "retry" }, text: "Retry", on: { click: () => retryPush(o, retry) } });
      body.append(
        el(
          "tr",
          { class: "has-detail", data: { outboxId: o.id, recordId: o.record_id } },
          el("td", { text: o.provider }),
          el("td", {}, el("span", { text: o.table_name + " " }), el("code", { title: String(o.record_id), text: shortId(o.record_id) })),
          el("td", { text: String(o.operation).toLowerCase() }),
          el("td", { class: "num", data: { label: "attempts" }, text: o.attempts }),
          el("td", {}, timeEl(o.processed_at || o.next_attempt_at)),
          el("td", { class: "right" }, retry)
        ),
        el("tr", { class: "detail-row", data: { errorFor: o.id } }, el("td", { colspan: 6, class: "error-cell", text: o.error || "" }))
      );
    }
  }

  async function retryPush(o, button) {
    button.disabled = true;
    try {
      const r = await api("POST", "/api/sync/retry", { direction: "outbound", provider: o.provider, entity: o.table_name, ids: [o.record_id] });
      note("failed-note", r.outbound ? "Re-queued the push of " + o.table_name + " " + o.record_id + "." : "Nothing to re-queue (it was retried already).");
      refresh();
    } catch (e) {
      note("failed-note", e.message, true);
      button.disabled = false;
    }
  }

  async function retryAll() {
    const b = $("retry-all");
    b.disabled = true;
    try {
      const r = await api("POST", "/api/sync/retry", { direction: "outbound" });
      note("failed-note", "Re-queued " + r.outbound + " pushes.");
      refresh();
    } catch (e) {
      note("failed-note", e.message, true);
    } finally {
      b.disabled = false;
    }
  }

  // ---- events -----------------------------------------------------------

  function renderEvents(data) {
    const list = data.events || [];
    show("events-empty", list.length === 0);
    show("events-table", list.length > 0);
    if (!changed("events", list)) return;
    const body = $("event-rows");
    clear(body);
    for (const e of list) {
      const replay = el("button", { type: "button", class: "quiet", data: { action: "replay" }, text: "Replay", on: { click: () => replayEvent(e, replay) } });
      const view = el("button", { type: "button", class: "link", data: { action: "view" }, text: "#" + e.id, on: { click: () => viewEvent(e.id) } });
      body.append(
        el(
          "tr",
          { data: { eventId: e.id, status: e.status } },
          el("td", { class: "num" }, view),
          el("td", { text: e.provider }),
          el("td", { text: e.event_type || "" }),
          el("td", {}, el("span", { class: "badge st-" + e.status, text: e.status })),
          el("td", {}, timeEl(e.received_at)),
          el("td", { class: "error-cell grow", text: e.error || "" }),
          el("td", { class: "right" }, replay)
        )
      );
    }
  }

  async function replayEvent(e, button) {
    button.disabled = true;
    try {
      await api("POST", "/api/sync/events/" + encodeURIComponent(e.id) + "/replay");
      note("events-note", "Event #" + e.id + " queued again.");
      refresh();
    } catch (err) {
      note("events-note", err.message, true);
      button.disabled = false;
    }
  }

  async function viewEvent(id) {
    openEvent = id;
    try {
      const e = await api("GET", "/api/sync/events/" + encodeURIComponent(id));
      if (openEvent !== id) return;
      setText("event-detail-title", "Event #" + e.id + " · " + e.provider + " · " + (e.event_type || "") + " · " + e.status);
      let body = e.body;
      try {
        body = JSON.stringify(JSON.parse(e.body), null, 2);
      } catch (_) {
        /* shown as received */
      }
      const parts = [body === undefined ? "(binary body: " + (e.body_base64 || "").length + " base64 chars)" : body];
      if (e.error) parts.unshift("error: " + e.error);
      if (e.audit && e.audit.length) parts.push("\naudit:\n" + JSON.stringify(e.audit, null, 2));
      setText("event-detail-body", parts.join("\n"));
      show("event-detail", true);
    } catch (err) {
      note("events-note", err.message, true);
    }
  }

  // ---- integrity --------------------------------------------------------

  const FIX_LABEL = { report: "report only", repair: "safe to fix", pull: "fixed by a pull" };

  function renderIntegrity(r) {
    // Keyed on what is shown: a run's answer and the stored results it
    // becomes draw the same.
    const shownPart = r && { finished_at: r.finished_at, fix: r.fix, fixed: r.fixed, findings: r.findings, errors: r.errors };
    if (!changed("integrity", shownPart || null)) return;
    const rows = $("integrity-rows");
    const errors = $("integrity-errors");
    clear(rows);
    clear(errors);
    const summary = $("integrity-summary");
    clear(summary);
    if (!r || !r.finished_at) {
      summary.append("Integrity has not run yet.");
      show("integrity-table", false);
      return;
    }
    const findings = r.findings || [];
    summary.append(r.fix ? "Last run with fixes " : "Last run ", timeEl(r.finished_at), ": " + findings.length + " findings" + (r.fix ? ", " + (r.fixed || 0) + " fixed" : "") + ".");
    show("integrity-table", findings.length > 0);
    for (const f of findings) {
      const fix = f.fix || {};
      const label = fix.kind === "repair" && r.fix ? "fixed " + (fix.fixed || 0) : FIX_LABEL[fix.kind] || fix.kind || "";
      rows.append(
        el(
          "tr",
          { data: { check: f.check, provider: f.provider } },
          el("td", { text: f.provider }),
          el("td", {}, el("span", { text: f.check }), f.table ? el("span", { class: "muted", text: " (" + f.table + ")" }) : null),
          el("td", { class: "num", text: f.count }),
          el(
            "td",
            {},
            el("span", { text: f.detail || "" }),
            f.examples && f.examples.length ? el("div", { class: "muted examples", text: "e.g. " + f.examples.map(valueText).join(", ") }) : null
          ),
          el("td", { text: label })
        )
      );
    }
    for (const e of r.errors || []) errors.append(el("li", { text: e }));
  }

  async function runIntegrity(fix) {
    const buttons = [$("integrity-run"), $("integrity-fix")];
    for (const b of buttons) b.disabled = true;
    note("integrity-note", fix ? "Checking and fixing…" : "Checking…");
    try {
      const r = fix ? await api("POST", "/api/sync/integrity/fix") : await api("GET", "/api/sync/integrity?run=true");
      renderIntegrity(r);
      note("integrity-note", fix ? "Fixed " + r.fixed + " of " + r.found + "; " + r.remaining + " remain." : r.found + " findings.");
      refresh();
    } catch (e) {
      note("integrity-note", e.message, true);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  // ---- start --------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", submitToken);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("retry-all").addEventListener("click", retryAll);
    $("integrity-run").addEventListener("click", () => runIntegrity(false));
    $("integrity-fix").addEventListener("click", () => runIntegrity(true));
    $("events-status").addEventListener("change", () => {
      delete shown.events;
      refresh();
    });
    $("event-detail-close").addEventListener("click", () => {
      openEvent = null;
      show("event-detail", false);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    setInterval(tickTimes, 1000);
    if (token) signIn(token);
    else signOut("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
