// Textpulse dashboard: keeps a campaign's summary cards live and fills its errors table.
//
// When /api needs a key, these same-origin GETs carry the dashboard's session cookie, which /api
// takes for reads (api/auth.py); the page holds no secret. The stream is read with fetch() rather
// than EventSource so that a refusal (401: the key was revoked; 404) is seen and ends the retries.
// Numbers are formatted the way the server renders them, so a live update and a reload read the same.
(function () {
  "use strict";

  const summary = document.getElementById("summary");
  if (!summary) return;
  const live = document.getElementById("live");

  const formats = {
    count: (v) => Math.trunc(Number(v) || 0).toLocaleString("en-US"),
    pct: (v) => (v === null || v === undefined ? "—" : (Number(v) * 100).toFixed(1) + "%"),
    money: (v) => (Number(v) || 0).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }),
    time: (v) => (v ? new Date(v).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "—"),
    text: (v) => String(v),
    status: (v) => String(v),
  };

  function lookup(data, path) {
    return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), data);
  }

  function setState(state, label) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = label;
  }

  let lastFailures = null;

  function showStats(data) {
    for (const el of document.querySelectorAll("[data-stat]")) {
      const value = lookup(data, el.dataset.stat);
      if (value === undefined) continue;
      const format = el.dataset.format || "count";
      const text = formats[format](value);
      if (format === "status") el.className = "badge badge-" + value;
      if (el.textContent !== text) {
        el.textContent = text;
        if (format !== "time") {
          el.classList.remove("flash");
          void el.offsetWidth; // restart the animation
          el.classList.add("flash");
        }
      }
    }
    const failures = (data.failed || 0) + (data.undelivered || 0);
    if (failures !== lastFailures) {
      lastFailures = failures;
      loadErrors();
    }
  }

  // -- errors by code: shown only where GET .../stats/errors answers ---------------------------
  async function loadErrors() {
    const section = document.getElementById("errors");
    if (!section || !summary.dataset.errorsUrl) return;
    let body;
    try {
      const response = await fetch(summary.dataset.errorsUrl, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return; // 404: the route is not there (yet); keep the section hidden
      body = await response.json();
    } catch (_) {
      return;
    }
    const rows = section.querySelector("tbody");
    rows.replaceChildren();
    for (const error of body.errors || []) {
      const tr = document.createElement("tr");
      const cells = [error.code || "—", error.text || "", formats.count(error.count), formats.pct(error.share)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i >= 2) td.className = "num";
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    }
    section.querySelector(".empty").hidden = rows.children.length > 0;
    section.querySelector("table").hidden = rows.children.length === 0;
    section.hidden = false;
  }

  // -- Server-Sent Events over fetch ------------------------------------------------------------
  function dispatch(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (event === "stats" && data.length) showStats(JSON.parse(data.join("\n")));
  }

  async function listen() {
    const response = await fetch(summary.dataset.eventsUrl, {
      headers: { Accept: "text/event-stream" },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 404) {
      throw Object.assign(new Error("stream refused: " + response.status), { final: true });
    }
    if (!response.ok || !response.body) throw new Error("stream failed: " + response.status);
    setState("live", "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      // Lines may end in CRLF, CR or LF; a CR at the very end may be half of a CRLF still to come.
      buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  async function run() {
    let wait = 1000;
    for (;;) {
      try {
        await listen();
        wait = 1000; // the server ended a healthy stream: come back soon
      } catch (error) {
        if (error.final) {
          setState("offline", "offline — reload the page");
          return;
        }
      }
      setState("reconnecting", "reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 30000);
    }
  }

  run();
})();
