// The console's shared helpers: calls to the /v1 API (with the session's CSRF token on state-changing
// requests), the live event stream, and DOM building with textContent only (never innerHTML: what came
// from the network stays text).
"use strict";

const vfax = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  async function api(path, { method = "GET", body = null } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf();
    const response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.detail) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // The same format as the server's `when` filter: "YYYY-MM-DD HH:MM:SS UTC".
  const when = (iso) => (iso ? String(iso).replace("T", " ").slice(0, 19) + " UTC" : "");

  function setText(element, value) {
    if (element) element.textContent = value === null || value === undefined ? "" : String(value);
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  const badge = (state) => el("span", { class: `badge ${state}`, text: state });

  const say = (text) => setText(document.getElementById("live"), text);

  // Follow /v1/events (optionally one job's). EventSource resumes by itself after a cut (Last-Event-ID).
  function events(onEvent, { job = null, onOpen = null } = {}) {
    const url = "/v1/events" + (job ? `?job=${encodeURIComponent(job)}` : "");
    const source = new EventSource(url);
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      onEvent(event);
    };
    source.onopen = () => {
      document.body.dataset.live = "yes";
      say("");
      if (onOpen) onOpen();
    };
    source.onerror = () => {
      document.body.dataset.live = "no";
      say("Live updates interrupted; reconnecting…");
    };
    // A page left holds no stream open: the browser allows only 6 connections to one host, and a stream
    // kept by a page being left (or kept in the back/forward cache) would leave the next pages waiting.
    window.addEventListener("pagehide", () => source.close());
    window.addEventListener("pageshow", (event) => { if (event.persisted) window.location.reload(); });
    return source;
  }

  // Run `work` once now and once more after it if asked again meanwhile (no overlapping refreshes).
  function serial(work) {
    let running = null;
    let again = false;
    return async function run() {
      if (running) { again = true; return running; }
      running = (async () => {
        do { again = false; try { await work(); } catch (error) { say(error.message); } } while (again);
      })();
      try { await running; } finally { running = null; }
    };
  }

  return { api, when, setText, el, badge, say, events, serial, csrf };
})();
