// Helpers both pages share: calling the paddock API and building DOM without innerHTML.
//
// Every text that came from the API or a model is put in the page with textContent, never
// as markup: a model's reply or a user's feedback is data, and must not become script.
"use strict";

(function () {
  const root = document.body.dataset.root || "";

  // An error the API answered: `detail` is the sentence written for the person reading it.
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function detailOf(status, body) {
    if (body && typeof body.detail === "string" && body.detail) return body.detail;
    if (status >= 500) return `The server failed (HTTP ${status}). Try again in a moment.`;
    return `The request was refused (HTTP ${status}).`;
  }

  async function readError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // A proxy's HTML error page, or an empty body: the status says enough.
    }
    return new ApiError(response.status, detailOf(response.status, body));
  }

  // fetch, with the API's error sentence as the thrown message. `stream: true` returns the
  // Response itself (for a server-sent-event body) once its status is known to be good.
  async function api(path, { method = "GET", body, key, stream = false, signal } = {}) {
    const headers = { Accept: stream ? "text/event-stream" : "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(root + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "Could not reach the paddock server. Check your connection and try again.");
    }
    if (!response.ok) throw await readError(response);
    if (stream) return response;
    if (response.status === 204) return null;
    return response.json();
  }

  // Calls onEvent(data) for each `data:` event of a server-sent-event body, as it arrives.
  // EventSource cannot send a POST, hence reading the body by hand.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const flush = (block) => {
      const lines = block.split("\n").filter((line) => line.startsWith("data:"));
      if (!lines.length) return;
      const data = lines.map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      let parsed;
      try {
        parsed = JSON.parse(data);
      } catch (_) {
        return; // not one of ours (a keep-alive, a comment)
      }
      onEvent(parsed);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        flush(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) flush(buffer);
  }

  // el("p", {class: "x", hidden: true}, "text", otherNode)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function show(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function formatDate(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    if (seconds < 120) return `${Math.round(seconds)} s`;
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }

  // The same thumb as the chat page's template draws (no emoji font is assumed).
  const THUMB =
    "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6C6.2 8 " +
    "6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";

  function thumb(up) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", up ? "icon" : "icon flip");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "18");
    svg.setAttribute("height", "18");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", THUMB);
    svg.append(path);
    return svg;
  }

  window.paddock = { api, ApiError, readEvents, el, show, formatDate, formatSeconds, thumb };
})();
