// The console's one script: makes pages live over the change stream (SSE), copies ids, keeps
// relative times fresh. Every page works without it; it only re-fetches the page it is on and
// swaps the parts marked data-live, so what it shows is always what the server rendered.
"use strict";

(() => {
  const body = document.body;
  const TYPES = ["job.submitted", "job.submit_failed", "job.submit_unknown", "job.succeeded",
    "job.failed", "job.lost", "job.stale"];
  const status = document.getElementById("live-status");
  const toggle = document.getElementById("live-toggle");
  let paused = sessionStorage.getItem("tracker-live-paused") === "1";
  let source = null;
  let backoff = 1000;
  let pending = false;
  let lastRefresh = 0;
  let timer = null;

  function say(text) { if (status) status.textContent = text; }

  // --- copy buttons -----------------------------------------------------------------------
  function wireCopies(root) {
    for (const button of root.querySelectorAll("button.copy[data-copy]")) {
      if (button.dataset.wired) continue;
      button.dataset.wired = "1";
      button.hidden = !navigator.clipboard;
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(button.dataset.copy);
          button.textContent = "copied";
          setTimeout(() => { button.textContent = "copy"; }, 1500);
        } catch (err) {
          button.textContent = "copy failed";
        }
      });
    }
  }

  // --- relative times ("3 min ago"), refreshed; the exact UTC stays in the title ----------
  function relative(seconds) {
    const abs = Math.abs(seconds);
    if (abs < 5) return "just now";
    const units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    for (const [size, unit] of units) {
      if (abs >= size) {
        const text = `${Math.floor(abs / size)} ${unit}`;
        return seconds > 0 ? `${text} ago` : `in ${text}`;
      }
    }
    return "just now";
  }
  function refreshTimes(root) {
    const now = Date.now();
    for (const el of root.querySelectorAll("time[datetime]")) {
      const at = Date.parse(el.getAttribute("datetime"));
      if (!Number.isNaN(at)) el.textContent = relative((now - at) / 1000);
    }
  }

  // --- live: re-fetch this page and swap its live parts -----------------------------------
  function rowIds(el) {
    return new Set(Array.from(el.querySelectorAll("[data-row]"), (row) => row.dataset.row));
  }
  async function refresh() {
    pending = false;
    lastRefresh = Date.now();
    let response;
    try {
      response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    } catch (err) {
      say("live: the server cannot be reached");
      return;
    }
    if (response.redirected || !response.ok) {
      say(response.status === 401 || response.redirected ? "live: signed out" : `live: HTTP ${response.status}`);
      return;
    }
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const old of document.querySelectorAll("[data-live]")) {
      const replacement = fresh.querySelector(`[data-live="${old.dataset.live}"]`);
      if (!replacement) continue;
      const seen = rowIds(old);
      const node = document.importNode(replacement, true);
      if (seen.size) {
        for (const row of node.querySelectorAll("[data-row]")) {
          if (!seen.has(row.dataset.row)) row.classList.add("new");
        }
      }
      old.replaceWith(node);
      wireCopies(node);
      refreshTimes(node);
    }
    body.dataset.refreshed = String(Number(body.dataset.refreshed || "0") + 1);
  }
  function schedule() {
    if (paused || pending) return;
    pending = true;
    const wait = Math.max(0, 1000 - (Date.now() - lastRefresh));  // at most one fetch a second
    timer = setTimeout(refresh, wait);
  }
  function concerns(event) {
    if (body.dataset.livePage !== "job") return true;
    try {
      const change = JSON.parse(event.data).data;
      return String(change.job_id || "") === body.dataset.jobId && body.dataset.jobId !== "";
    } catch (err) {
      return true;
    }
  }
  function connect() {
    if (paused || source || !body.dataset.stream) return;
    const url = new URL(body.dataset.stream, window.location.href);
    url.searchParams.set("after", body.dataset.after || "0");
    source = new EventSource(url.toString());
    source.addEventListener("open", () => { backoff = 1000; say("live"); });
    for (const type of TYPES) {
      source.addEventListener(type, (event) => {
        if (event.lastEventId) body.dataset.after = event.lastEventId;
        if (concerns(event)) schedule();
      });
    }
    source.addEventListener("error", () => {
      // A dropped 200 stream is retried by the browser with Last-Event-ID; any other answer
      // (401, a proxy's 502) closes it for good: open a new one, later and later.
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        say("live: reconnecting");
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 30000);
      } else {
        say("live: reconnecting");
      }
    });
  }
  function disconnect() {
    if (source) { source.close(); source = null; }
    if (timer) { clearTimeout(timer); timer = null; pending = false; }
  }
  function showToggle() {
    if (!toggle) return;
    toggle.hidden = false;
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    say(paused ? "live updates paused" : "live");
  }

  document.addEventListener("DOMContentLoaded", () => {
    wireCopies(document);
    setInterval(() => refreshTimes(document), 30000);
    if (!body.dataset.stream) return;
    showToggle();
    if (toggle) {
      toggle.addEventListener("click", () => {
        paused = !paused;
        sessionStorage.setItem("tracker-live-paused", paused ? "1" : "0");
        showToggle();
        if (paused) disconnect(); else { connect(); schedule(); }
      });
    }
    connect();
    // What a job change does not announce (a refused callback, a delivery): the overview and
    // the inbox look again now and then.
    if (body.dataset.livePage === "overview" || window.location.pathname === "/ui/inbox") {
      setInterval(() => { if (!paused) schedule(); }, 10000);
    }
  });
  window.addEventListener("pagehide", disconnect);  // one stream per page (6 per browser on HTTP/1.1)
  window.addEventListener("pageshow", (event) => { if (event.persisted) connect(); });
})();
