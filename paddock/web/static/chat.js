// The beta chat: one model, or two anonymous ones side by side in the arena.
//
// The user is a random id kept in localStorage (the server stores only a keyed hash of
// it), so the same browser counts as the same person without any sign-in.
"use strict";

(function () {
  const { api, readEvents, el, show } = window.paddock;
  const $ = (id) => document.getElementById(id);
  const USER_KEY = "paddock.userId";

  const ui = {
    start: $("start"),
    startForm: $("start-form"),
    startButton: $("start-button"),
    startError: $("start-error"),
    conversation: $("conversation"),
    title: $("conversation-title"),
    route: $("route"),
    routeReason: $("route-reason"),
    panes: $("panes"),
    error: $("chat-error"),
    status: $("chat-status"),
    regenerate: $("regenerate"),
    composer: $("composer"),
    message: $("message"),
    send: $("send"),
    feedbackForm: $("feedback-form"),
    feedbackError: $("feedback-error"),
    voteForm: $("vote-form"),
    voteHint: $("vote-hint"),
    voteError: $("vote-error"),
    ended: $("ended"),
    endedText: $("ended-text"),
  };

  // The conversation on screen; null before one is started.
  let conv = null;

  function userId() {
    let id = null;
    try {
      id = localStorage.getItem(USER_KEY);
    } catch (_) {
      // Storage blocked: an id for this page view only, which still works.
    }
    if (!id) {
      // getRandomValues, not randomUUID: the latter exists only on https or localhost.
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      try {
        localStorage.setItem(USER_KEY, id);
      } catch (_) {
        // as above
      }
    }
    return id;
  }

  const keyOf = (side) => side || "solo";
  const sideName = (side) => (side ? `Model ${side.toUpperCase()}` : conv.model || "The model");

  // ------------------------------------------------------------------ starting

  ui.startForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(ui.startForm);
    const mode = data.get("mode") === "arena" ? "arena" : "beta";
    show(ui.startError, "");
    ui.startButton.disabled = true;
    ui.startButton.textContent = "Starting…";
    try {
      const started = await api("/chat/conversations", {
        method: "POST",
        body: { mode, user_id: userId(), consent: data.get("consent") === "on" },
      });
      open(started);
    } catch (err) {
      show(ui.startError, err.message);
    } finally {
      ui.startButton.disabled = false;
      ui.startButton.textContent = "Start conversation";
    }
  });

  function open(started) {
    const arena = started.mode === "arena";
    conv = {
      id: started.conversation_id,
      mode: started.mode,
      model: started.model,
      sides: arena ? ["a", "b"] : [null],
      logs: {},
      titles: {},
      last: {}, // per side: the newest reply shown ({li, body, meta, state})
      turns: 0,
      busy: false,
      // Leaving a conversation stops reading its reply (the server still stores it whole).
      abort: new AbortController(),
      ended: false,
    };
    ui.title.textContent = arena
      ? "Arena: two anonymous models"
      : `You are talking to ${started.model || "a new model"}`;
    const reason = started.route && started.route.reason;
    ui.route.hidden = !reason;
    ui.routeReason.textContent = reason || "";
    ui.panes.replaceChildren();
    ui.panes.classList.toggle("arena", arena);
    for (const side of conv.sides) {
      const key = keyOf(side);
      // One model: the heading above already names it, so its pane title is for
      // screen readers only.
      const title = el("h3", {
        class: side ? "pane-title" : "pane-title visually-hidden",
        id: `pane-${key}-title`,
        text: side ? sideName(side) : started.model || "Model",
      });
      // role=log reads new messages out; aria-busy holds that back while a reply streams.
      const log = el("ol", { class: "log", role: "log", "aria-labelledby": title.id });
      log.append(
        el("li", { class: "empty muted", text: side ? "Its answers appear here." : "Say hello to start." }),
      );
      ui.panes.append(el("section", { class: "pane", "data-side": key }, title, log));
      conv.logs[key] = log;
      conv.titles[key] = title;
    }
    for (const node of [ui.error, ui.feedbackError, ui.voteError]) show(node, "");
    ui.feedbackForm.reset();
    ui.feedbackForm.hidden = true;
    ui.voteForm.hidden = true;
    for (const button of ui.voteForm.querySelectorAll("button")) button.disabled = true;
    ui.voteHint.hidden = false;
    ui.ended.hidden = true;
    ui.composer.hidden = false;
    ui.message.value = "";
    ui.start.hidden = true;
    ui.conversation.hidden = false;
    refresh();
    ui.message.focus();
  }

  function reset() {
    if (conv) conv.abort.abort();
    conv = null;
    ui.conversation.hidden = true;
    ui.start.hidden = false;
    ui.startButton.focus();
  }

  $("new-conversation").addEventListener("click", reset);
  $("start-again").addEventListener("click", reset);

  // ------------------------------------------------------------------ messages

  function append(key, li) {
    const log = conv.logs[key];
    const empty = log.querySelector(".empty");
    if (empty) empty.remove();
    log.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  function userMessage(key, text) {
    const li = el("li", { class: "msg user" }, el("span", { class: "who", text: "You" }), el("div", { class: "body", text }));
    append(key, li);
    return li;
  }

  function newReply(side) {
    const key = keyOf(side);
    const body = el("div", { class: "body" });
    const meta = el("p", { class: "meta" });
    const li = el("li", { class: "msg assistant streaming" }, el("span", { class: "who", text: sideName(side) }), body, meta);
    body.append(el("span", { class: "typing", "aria-label": "writing…" }, el("span"), el("span"), el("span")));
    append(key, li);
    conv.logs[key].setAttribute("aria-busy", "true");
    return { side, key, li, body, meta, text: "", state: "streaming" };
  }

  function duration(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function addDelta(reply, delta) {
    if (reply.state !== "streaming") return;
    const log = conv.logs[reply.key];
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    reply.text += delta;
    reply.body.textContent = reply.text;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function finish(reply, done) {
    reply.state = "done";
    reply.li.classList.remove("streaming");
    reply.body.textContent = reply.text;
    if (!reply.text) reply.body.append(el("em", { class: "muted", text: "(an empty reply)" }));
    const parts = [];
    if (typeof done.ttft_ms === "number") parts.push(`first word after ${duration(done.ttft_ms)}`);
    if (typeof done.output_tokens === "number") {
      const total = typeof done.latency_ms === "number" ? ` in ${duration(done.latency_ms)}` : "";
      parts.push(`${done.output_tokens} tokens${total}`);
    }
    reply.meta.textContent = parts.join(" · ");
    conv.logs[reply.key].removeAttribute("aria-busy");
  }

  // The bubble says briefly that the reply is missing; the alert above the composer
  // carries the API's full sentence (what happened, whether the message was kept).
  function fail(reply, detail, summary) {
    reply.state = "error";
    reply.error = detail;
    reply.li.classList.remove("streaming");
    reply.li.classList.add("failed");
    reply.body.textContent = reply.text;
    reply.meta.textContent = summary || (reply.text ? "The reply broke off here." : "No reply.");
    conv.logs[reply.key].removeAttribute("aria-busy");
  }

  function errorSentence(replies, suffix = "") {
    const failed = replies.filter((r) => r.error);
    const arena = conv.mode === "arena";
    const text = failed.map((r) => (arena ? `${sideName(r.side)}: ${r.error}` : r.error)).join(" ");
    return text ? text + suffix : "";
  }

  // ------------------------------------------------------------------ a turn

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.message.value;
    if (!text.trim() || !conv || conv.busy || conv.ended) return;
    ui.message.value = "";
    turn("send", text);
  });

  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  ui.regenerate.addEventListener("click", () => {
    if (conv && !conv.busy && !conv.ended && conv.turns) turn("regenerate");
  });

  async function turn(kind, text) {
    const current = conv;
    current.busy = true;
    show(ui.error, "");
    refresh();
    const asked = [];
    const replies = {};
    const replaced = {};
    for (const side of current.sides) {
      const key = keyOf(side);
      if (kind === "send") {
        asked.push(userMessage(key, text));
      } else {
        const last = current.last[key];
        if (last) {
          replaced[key] = last;
          last.li.classList.add("replaced");
        }
      }
      replies[key] = newReply(side);
    }
    announce(current.mode === "arena" ? "Both models are replying…" : `${sideName(null)} is replying…`);

    const path = `/chat/conversations/${encodeURIComponent(current.id)}/` + (kind === "send" ? "messages" : "regenerate");
    let response;
    try {
      response = await api(path, {
        method: "POST",
        body: kind === "send" ? { content: text } : undefined,
        stream: true,
        signal: current.abort.signal,
      });
    } catch (err) {
      if (conv !== current) return;
      refused(kind, err, text, asked, replies, replaced);
      return;
    }
    if (kind === "send") current.turns += 1;
    try {
      await readEvents(response, (event) => {
        const reply = replies[keyOf(event.side)];
        if (!reply || conv !== current) return;
        if (typeof event.delta === "string") addDelta(reply, event.delta);
        else if (event.done) finish(reply, event);
        else if (typeof event.error === "string") fail(reply, event.error);
      });
    } catch (_) {
      // The connection dropped; the replies still streaming are reported below.
    }
    if (conv !== current) return;
    const kept = []; // failed regenerations whose earlier reply stays
    for (const [key, reply] of Object.entries(replies)) {
      if (reply.state === "streaming") {
        fail(reply, "The connection was lost before the reply finished; try again.");
      }
      const old = replaced[key];
      if (reply.state === "done" || (old && old.state !== "done")) {
        if (old) old.li.remove(); // a failed attempt gives way to the newer one either way
        current.last[key] = reply;
      } else if (old) {
        // The server keeps the old reply when a regeneration fails, and so does the page.
        reply.li.remove();
        old.li.classList.remove("replaced");
        current.last[key] = old;
        kept.push(reply);
      } else {
        current.last[key] = reply;
      }
    }
    const fresh = Object.values(replies).filter((r) => !kept.includes(r));
    const sentences = [errorSentence(fresh), errorSentence(kept, " The previous reply is kept.")];
    show(ui.error, sentences.filter(Boolean).join(" "));
    const failed = Object.values(replies).some((r) => r.state !== "done");
    announce(failed ? "The reply did not finish." : "Reply finished.");
    current.busy = false;
    refresh();
  }

  // The API answered with an error before any reply started.
  function refused(kind, err, text, asked, replies, replaced) {
    if (kind === "send" && err.status === 503) {
      // The model is down but the message is stored: show it, and offer another try.
      conv.turns += 1;
      for (const reply of Object.values(replies)) {
        fail(reply, err.message, "No reply: the model did not answer.");
        conv.last[reply.key] = reply;
      }
    } else {
      // Nothing was stored (too long, conversation ended, model gone…): undo the turn.
      for (const node of asked) node.remove();
      for (const reply of Object.values(replies)) {
        reply.li.remove();
        conv.logs[reply.key].removeAttribute("aria-busy");
        const old = replaced[reply.key];
        if (old) old.li.classList.remove("replaced");
      }
      if (kind === "send" && !ui.message.value) ui.message.value = text;
    }
    show(ui.error, err.message);
    announce("The model did not answer.");
    conv.busy = false;
    refresh();
  }

  function announce(message) {
    ui.status.textContent = message;
  }

  // Which controls make sense now.
  function refresh() {
    if (!conv) return;
    const open = !conv.ended;
    ui.send.disabled = conv.busy || !open;
    ui.composer.hidden = !open;
    const lastFailed = Object.values(conv.last).some((r) => r.state === "error");
    ui.regenerate.hidden = !open || conv.turns === 0;
    ui.regenerate.disabled = conv.busy;
    const again = conv.mode === "arena" ? "Regenerate both replies" : "Regenerate last reply";
    ui.regenerate.textContent = lastFailed ? "Try again" : again;
    if (conv.mode === "arena") {
      ui.voteForm.hidden = !open;
      const ready = conv.turns > 0 && !conv.busy;
      for (const button of ui.voteForm.querySelectorAll("button")) button.disabled = !ready;
      ui.voteHint.hidden = ready;
    } else {
      ui.feedbackForm.hidden = !open || conv.turns === 0;
      ui.feedbackForm.querySelector("button[type=submit]").disabled = conv.busy;
    }
  }

  // ------------------------------------------------------------------ ending

  ui.feedbackForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!conv || conv.busy || conv.ended) return;
    const data = new FormData(ui.feedbackForm);
    const thumbs = data.get("thumbs");
    if (!thumbs) {
      show(ui.feedbackError, "Choose Good or Bad first.");
      return;
    }
    const text = String(data.get("text") || "").trim();
    const current = conv;
    current.busy = true;
    refresh();
    show(ui.feedbackError, "");
    try {
      await api(`/chat/conversations/${encodeURIComponent(current.id)}/feedback`, {
        method: "POST",
        body: { thumbs_up: thumbs === "up", text: text || null },
      });
    } catch (err) {
      current.busy = false;
      refresh();
      show(ui.feedbackError, err.message);
      return;
    }
    current.busy = false;
    end(`Your rating went to the developer of ${current.model || "this model"}. The conversation is closed.`);
  });

  const VERDICT = {
    model_a: "A is better",
    model_b: "B is better",
    tie: "it's a tie",
    "tie (bothbad)": "both are bad",
  };

  ui.voteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const winner = event.submitter && event.submitter.value;
    if (!conv || conv.busy || conv.ended || !VERDICT[winner]) return;
    const current = conv;
    current.busy = true;
    refresh();
    show(ui.voteError, "");
    let result;
    try {
      result = await api(`/chat/conversations/${encodeURIComponent(current.id)}/vote`, {
        method: "POST",
        body: { winner },
      });
    } catch (err) {
      current.busy = false;
      refresh();
      show(ui.voteError, err.message);
      return;
    }
    current.busy = false;
    reveal(result);
  });

  // Only the vote's answer names the models: until then the page does not know them.
  function reveal(result) {
    const who = (identity) => `${identity.name} by ${identity.developer}`;
    for (const [side, identity] of [["a", result.model_a], ["b", result.model_b]]) {
      const title = conv.titles[side];
      title.replaceChildren(`Model ${side.toUpperCase()}: `, el("span", { class: "revealed", text: who(identity) }));
      const won = result.winner === `model_${side}`;
      if (won) title.append(" ", el("span", { class: "badge good", text: "your pick" }));
    }
    end(
      `You voted: ${VERDICT[result.winner]}. Model A was ${who(result.model_a)}; ` +
        `Model B was ${who(result.model_b)}.`,
    );
  }

  function end(message) {
    conv.ended = true;
    ui.feedbackForm.hidden = true;
    ui.voteForm.hidden = true;
    ui.endedText.textContent = message;
    ui.ended.hidden = false;
    refresh();
    ui.ended.focus();
  }
})();
