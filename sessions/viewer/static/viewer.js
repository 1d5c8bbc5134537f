// convstore viewer: small progressive enhancements. Every page works without this file,
// except live updates (server-sent events) of a conversation.
"use strict";
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  // Selects that choose a branch submit their form at once.
  for (const select of document.querySelectorAll("select.autosubmit")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // The time-travel slider shows the version while it moves, and goes there on release.
  const range = document.getElementById("version-range");
  const out = document.getElementById("version-out");
  if (range && out) {
    range.addEventListener("input", () => {
      out.textContent = `v${range.value} of ${range.max}`;
    });
    range.addEventListener("change", () => range.form.submit());
  }
  // A conversation's newest page follows the log: each new event of the session
  // reloads its items (pops and clears included) from the server.
  const box = document.getElementById("conversation");
  if (box && box.dataset.live && window.EventSource) {
    const status = document.getElementById("live-status");
    const source = new EventSource(box.dataset.live);
    let pending = null;
    source.addEventListener("open", () => { if (status) status.hidden = false; });
    source.addEventListener("error", () => { if (status) status.hidden = true; });
    let again = false;
    const refresh = () => {
      if (pending) { again = true; return; } // one at a time; the next reads the newest
      again = false;
      pending = fetch(box.dataset.refresh, { credentials: "same-origin" })
        .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
        .then((html) => {
          const atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
          box.innerHTML = html;
          if (atBottom) window.scrollTo(0, document.body.scrollHeight);
        })
        .catch(() => {})
        .finally(() => {
          pending = null;
          if (again) refresh();
        });
    };
    source.addEventListener("change", refresh);
  }
});
