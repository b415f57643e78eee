// The developer dashboard: own submissions with their pipeline timelines, the feedback
// users left, samples of shared conversations, and the leaderboard.
//
// The key lives in sessionStorage: it survives a reload but not the tab, so a borrowed
// computer does not keep it, and it is only ever sent as a Bearer header to this origin.
"use strict";

(function () {
  const { api, el, show, formatDate, formatSeconds, thumb } = window.paddock;
  const $ = (id) => document.getElementById(id);
  const KEY = "paddock.apiKey";
  const POLL_MS = 4000;
  // Statuses a pipeline run moves on from by itself (the server lists them for the page).
  const WORKING = new Set((document.body.dataset.working || "").split(" ").filter(Boolean));

  const ui = {
    keySection: $("key-section"),
    keyForm: $("key-form"),
    keyInput: $("api-key"),
    keyButton: $("use-key"),
    keyError: $("key-error"),
    account: $("account"),
    developerName: $("developer-name"),
    status: $("dashboard-status"),
    submissionsSection: $("submissions-section"),
    submissionsError: $("submissions-error"),
    submissions: $("submissions"),
    leaderboardSection: $("leaderboard-section"),
    leaderboardWhen: $("leaderboard-when"),
    leaderboardError: $("leaderboard-error"),
    leaderboard: $("leaderboard"),
  };

  let key = null;
  let me = null;
  let pollTimer = null;

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY);
    } catch (_) {
      return null;
    }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY, value);
      else sessionStorage.removeItem(KEY);
    } catch (_) {
      // Storage blocked: the key lasts as long as the page.
    }
  }

  // ------------------------------------------------------------------ signing in

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = ui.keyInput.value.trim();
    if (candidate) signIn(candidate);
  });

  $("forget-key").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", () => loadAll());

  async function signIn(candidate) {
    show(ui.keyError, "");
    ui.keyButton.disabled = true;
    ui.keyButton.textContent = "Checking…";
    try {
      me = await api("/developers/me", { key: candidate });
    } catch (err) {
      const why = err.status === 401 ? `That key was not accepted: ${err.message}` : err.message;
      signOut(why);
      return;
    } finally {
      ui.keyButton.disabled = false;
      ui.keyButton.textContent = "Show my models";
    }
    key = candidate;
    storeKey(key);
    ui.keyInput.value = "";
    ui.developerName.textContent = me.name;
    ui.keySection.hidden = true;
    ui.account.hidden = false;
    ui.submissionsSection.hidden = false;
    ui.leaderboardSection.hidden = false;
    await loadAll();
  }

  function signOut(reason) {
    key = null;
    me = null;
    storeKey(null);
    stopPolling();
    ui.account.hidden = true;
    ui.submissionsSection.hidden = true;
    ui.leaderboardSection.hidden = true;
    ui.submissions.replaceChildren();
    ui.leaderboard.replaceChildren();
    ui.keySection.hidden = false;
    show(ui.keyError, reason);
    ui.keyInput.focus();
  }

  // A 401 while signed in (the key was revoked meanwhile) sends the developer back to the
  // key form with the reason, instead of leaving half a dashboard.
  async function call(path) {
    try {
      return await api(path, { key });
    } catch (err) {
      if (err.status === 401) signOut(`Your key stopped working: ${err.message}`);
      throw err;
    }
  }

  async function loadAll() {
    if (!key) return;
    ui.status.textContent = "Loading…";
    await Promise.all([loadSubmissions(), loadLeaderboard()]);
    if (key) ui.status.textContent = "Dashboard up to date.";
  }

  // ------------------------------------------------------------------ submissions

  const cards = new Map(); // submission id -> {article, timeline, feedback, status}

  async function loadSubmissions() {
    show(ui.submissionsError, "");
    let rows;
    try {
      rows = await call("/submissions");
    } catch (err) {
      if (key) show(ui.submissionsError, err.message);
      return;
    }
    cards.clear();
    if (!rows.length) {
      ui.submissions.replaceChildren(
        el("p", { class: "muted" }, "No submissions yet. ", el("code", { text: "paddock submit ORG/NAME" }), " sends your first model."),
      );
      return;
    }
    ui.submissions.replaceChildren(...rows.map(card));
    await Promise.all(rows.map((sub) => Promise.all([loadTimeline(sub.id), loadFeedback(sub.id)])));
    schedulePoll();
  }

  function card(sub) {
    const headingId = `sub-${sub.id}-title`;
    const status = el("span", { class: `badge status-${sub.status}`, text: label(sub.status) });
    const timeline = el("div", { class: "timeline" }, el("p", { class: "muted", text: "Loading the timeline…" }));
    const feedback = el("div", { class: "feedback" }, el("p", { class: "muted", text: "Loading feedback…" }));
    const samples = el("div", { class: "samples" });
    const details = el("details", { class: "conversations" }, el("summary", { text: "Shared conversations (a random sample, anonymized)" }), samples);
    details.addEventListener("toggle", () => {
      if (details.open && !samples.dataset.loaded) loadSamples(sub.id, samples);
    });
    const article = el(
      "article",
      { class: "card submission", "aria-labelledby": headingId, "data-submission": sub.id },
      el(
        "header",
        { class: "submission-head" },
        el("h3", { id: headingId }, sub.name, " ", el("span", { class: "muted id", text: sub.id })),
        status,
      ),
      el(
        "p",
        { class: "muted" },
        el("span", { text: sub.source }),
        sub.resolved_revision ? ` @ ${sub.resolved_revision.slice(0, 12)}` : "",
        ` · submitted ${formatDate(sub.created_at)}`,
      ),
      el("h4", { text: "Pipeline" }),
      timeline,
      el("h4", { text: "Feedback" }),
      feedback,
      details,
    );
    cards.set(sub.id, { article, timeline, feedback, statusBadge: status, status: sub.status });
    return article;
  }

  function label(status) {
    return String(status).replace(/_/g, " ");
  }

  async function loadTimeline(id) {
    const slot = cards.get(id);
    if (!slot) return;
    let report;
    try {
      report = await call(`/submissions/${encodeURIComponent(id)}`);
    } catch (err) {
      slot.timeline.replaceChildren(el("p", { class: "error", role: "alert", text: err.message }));
      return;
    }
    slot.status = report.status;
    slot.statusBadge.className = `badge status-${report.status}`;
    slot.statusBadge.textContent = label(report.status);
    slot.timeline.replaceChildren(...timeline(report));
  }

  function timeline(report) {
    const out = [];
    // The SLA is about reaching users: it is judged for a run that is live or under way,
    // not for one that stopped (a rejection is fast and still no success).
    const sla = el("span", {
      class: `badge ${report.within_sla ? "good" : "bad"}`,
      text: report.within_sla ? "within SLA" : "over SLA",
    });
    const total = formatSeconds(report.total_seconds);
    const target = `${report.sla_seconds} s`;
    let summary;
    if (report.status === "deployed") {
      summary = [`Serving users ${total} after submission (target ${target}) `, sla];
    } else if (WORKING.has(report.status)) {
      summary = [`Running for ${total} so far (target ${target}) `, sla];
    } else {
      const status = label(report.status);
      summary = [`${status.charAt(0).toUpperCase()}${status.slice(1)} after ${total}`];
    }
    out.push(el("p", { class: "summary" }, ...summary));
    if (report.reason) {
      const where = report.failed_stage ? `${report.failed_stage}: ` : "";
      out.push(el("p", { class: report.status === "failed" ? "error" : "muted" }, where, report.reason));
    }
    if (report.endpoint) {
      out.push(el("p", { class: "muted" }, "Serving at ", el("code", { text: report.endpoint })));
    }
    if (!report.stages.length) {
      out.push(el("p", { class: "muted", text: "No stage has started yet." }));
      return out;
    }
    const longest = Math.max(...report.stages.map((s) => s.seconds || 0), 0.001);
    const rows = report.stages.map((stage) => {
      const bar = el("span", { class: "bar" });
      // CSSOM, not a style attribute: the Content-Security-Policy allows only the former.
      bar.style.width = `${Math.max(2, ((stage.seconds || 0) / longest) * 100)}%`;
      return el(
        "tr",
        { class: `stage stage-${stage.status}` },
        el("th", { scope: "row", text: stage.name }),
        el("td", {}, el("span", { class: `badge stage-${stage.status}`, text: stage.status })),
        el("td", { class: "num" }, formatSeconds(stage.seconds)),
        el("td", { class: "bar-cell", "aria-hidden": "true" }, bar),
        el("td", { class: "num attempts", "data-label": "attempts", text: String(stage.attempts) }),
        el("td", { class: "detail", text: stage.detail || "" }),
      );
    });
    out.push(
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "stages" },
          el("caption", { class: "visually-hidden", text: `Pipeline stages of ${report.name}` }),
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", { scope: "col", text: "Stage" }),
              el("th", { scope: "col", text: "Status" }),
              el("th", { scope: "col", class: "num", text: "Time" }),
              el("td", { class: "bar-cell", "aria-hidden": "true" }),
              el("th", { scope: "col", class: "num", text: "Attempts" }),
              el("th", { scope: "col", text: "Detail" }),
            ),
          ),
          el("tbody", {}, ...rows),
        ),
      ),
    );
    if (report.stress) out.push(stress(report.stress));
    return out;
  }

  const STRESS = [
    ["median_ttft_ms", "median time to first token", (v) => `${Math.round(v)} ms`],
    ["median_tpot_ms", "median time per output token", (v) => `${v.toFixed(1)} ms`],
    ["p99_e2el_ms", "p99 end-to-end latency", (v) => `${Math.round(v)} ms`],
    ["output_throughput", "output throughput", (v) => `${v.toFixed(1)} tokens/s`],
    ["error_rate", "error rate", (v) => `${(v * 100).toFixed(1)} %`],
  ];

  function stress(headline) {
    const list = el("dl", { class: "stats" });
    for (const [name, text, format] of STRESS) {
      const value = headline[name];
      if (typeof value === "number") list.append(el("div", {}, el("dt", { text }), el("dd", { text: format(value) })));
    }
    const verdict = el("span", { class: `badge ${headline.passed ? "good" : "bad"}`, text: headline.passed ? "passed" : "missed the SLO" });
    const out = el("div", { class: "stress" }, el("p", {}, "Stress test ", verdict), list);
    if (headline.failures && headline.failures.length) {
      out.append(el("ul", { class: "error" }, ...headline.failures.map((f) => el("li", { text: f }))));
    }
    return out;
  }

  async function loadFeedback(id) {
    const slot = cards.get(id);
    if (!slot) return;
    let fb;
    try {
      fb = await call(`/submissions/${encodeURIComponent(id)}/feedback`);
    } catch (err) {
      slot.feedback.replaceChildren(el("p", { class: "error", role: "alert", text: err.message }));
      return;
    }
    const stats = el(
      "dl",
      { class: "stats" },
      stat("ratings", fb.ratings),
      stat("thumbs up", fb.thumbs_up),
      stat("thumbs down", fb.thumbs_down),
      stat("arena votes", fb.arena_votes),
      stat("regenerated replies", fb.retries),
    );
    if (!fb.items.length) {
      slot.feedback.replaceChildren(stats, el("p", { class: "muted", text: "No ratings yet." }));
      return;
    }
    const items = fb.items.map((item) =>
      el(
        "li",
        { class: `rating ${item.thumbs_up ? "up" : "down"}` },
        el("span", { class: "verdict" }, thumb(item.thumbs_up), item.thumbs_up ? " Good" : " Bad"),
        el("span", { class: item.category ? "badge category" : "badge muted", text: item.category || "not categorized yet" }),
        item.text ? el("q", { class: "text", text: item.text }) : el("span", { class: "muted text", text: "(no comment)" }),
        el("span", { class: "muted when", text: formatDate(item.created_at) }),
      ),
    );
    slot.feedback.replaceChildren(stats, el("ul", { class: "ratings" }, ...items));
  }

  function stat(text, value) {
    return el("div", {}, el("dt", { text }), el("dd", { text: String(value) }));
  }

  async function loadSamples(id, slot) {
    slot.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    let data;
    try {
      data = await call(`/submissions/${encodeURIComponent(id)}/conversations`);
    } catch (err) {
      slot.replaceChildren(el("p", { class: "error", role: "alert", text: err.message }));
      return;
    }
    slot.dataset.loaded = "1";
    if (!data.conversations.length) {
      slot.replaceChildren(el("p", { class: "muted", text: "No user has shared a conversation with this model yet." }));
      return;
    }
    slot.replaceChildren(...data.conversations.map(sample));
  }

  function sample(conv) {
    const rating =
      conv.thumbs_up === null || conv.thumbs_up === undefined
        ? el("span", { class: "muted", text: conv.mode === "arena" ? "arena" : "not rated" })
        : el("span", { class: `verdict ${conv.thumbs_up ? "up" : "down"}` }, thumb(conv.thumbs_up), conv.thumbs_up ? " Good" : " Bad");
    const messages = conv.messages.map((m) => {
      const flags = [];
      if (m.regenerated) flags.push("regenerated");
      if (m.superseded) flags.push("replaced by a regeneration");
      if (m.error) flags.push(`failed: ${m.error}`);
      if (typeof m.ttft_ms === "number") flags.push(`first word after ${Math.round(m.ttft_ms)} ms`);
      if (typeof m.output_tokens === "number") flags.push(`${m.output_tokens} tokens`);
      return el(
        "li",
        { class: `msg ${m.role === "user" ? "user" : "assistant"}${m.superseded ? " replaced" : ""}${m.error ? " failed" : ""}` },
        el("span", { class: "who", text: m.role === "user" ? "User" : "Your model" }),
        el("div", { class: "body", text: m.content }),
        flags.length ? el("p", { class: "meta", text: flags.join(" · ") }) : null,
      );
    });
    return el(
      "section",
      { class: "sample" },
      el("p", { class: "sample-head" }, el("strong", { text: formatDate(conv.created_at) }), ` · ${conv.mode} · `, rating),
      conv.feedback ? el("p", {}, "Feedback: ", el("q", { text: conv.feedback })) : null,
      el("ol", { class: "log" }, ...messages),
    );
  }

  // ------------------------------------------------------------------ leaderboard

  async function loadLeaderboard() {
    show(ui.leaderboardError, "");
    let board;
    try {
      board = await call("/leaderboard");
    } catch (err) {
      if (key) show(ui.leaderboardError, err.message);
      return;
    }
    ui.leaderboardWhen.textContent = board.created_at
      ? `Computed ${formatDate(board.created_at)} from users' ratings and arena votes.`
      : "";
    const parts = [];
    if (board.rows.length) parts.push(table("Ratings", board.rows));
    if (board.arena.length) parts.push(table("Arena", board.arena));
    if (!parts.length) parts.push(el("p", { class: "muted", text: "No leaderboard yet: it appears once the feedback flow has run." }));
    ui.leaderboard.replaceChildren(...parts);
  }

  // The leaderboard's columns are whatever the feedback flow computed, so they are read
  // from the rows rather than fixed here.
  function table(title, rows) {
    const columns = [];
    for (const row of rows) for (const name of Object.keys(row)) if (!columns.includes(name)) columns.push(name);
    const numeric = new Set(columns.filter((name) => rows.some((row) => typeof row[name] === "number")));
    const mine = (row) => me && (row.developer === me.name || row.developer_name === me.name);
    const body = rows.map((row) =>
      el(
        "tr",
        { class: mine(row) ? "mine" : null },
        ...columns.map((name, i) => {
          const attrs = { class: numeric.has(name) ? "num" : null, text: cell(row[name]) };
          return i === 0 ? el("th", { scope: "row", ...attrs }) : el("td", attrs);
        }),
      ),
    );
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "board" },
        el("caption", { text: title }),
        el(
          "thead",
          {},
          el("tr", {}, ...columns.map((name) => el("th", { scope: "col", class: numeric.has(name) ? "num" : null, text: label(name) }))),
        ),
        el("tbody", {}, ...body),
      ),
    );
  }

  function cell(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(3);
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // ------------------------------------------------------------------ live timelines

  // While a pipeline runs, its timeline refreshes itself; settled ones are left alone.
  function schedulePoll() {
    stopPolling();
    const running = [...cards.entries()].filter(([, slot]) => WORKING.has(slot.status));
    if (!key || !running.length) return;
    pollTimer = setTimeout(async () => {
      await Promise.all(
        running.map(async ([id]) => {
          await loadTimeline(id);
          const slot = cards.get(id);
          if (slot && !WORKING.has(slot.status)) await loadFeedback(id);
        }),
      );
      schedulePoll();
    }, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer !== null) clearTimeout(pollTimer);
    pollTimer = null;
  }

  const saved = storedKey();
  if (saved) signIn(saved);
  else ui.keyInput.focus();
})();
