// Recent requests made with this key, kept by the server (`GET /api/requests`); each one can be reopened.

import { api } from "./api.js";
import { badge, el, outcomeOf } from "./dom.js";

export const HISTORY_LIMIT = 50;
const HEADINGS = ["Created", "Endpoint", "Status", "Request", ""];

export function reopenUrl(entry) {
  return `/playground/${entry.endpoint_id}?request=${encodeURIComponent(entry.request_id)}`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function row(entry) {
  const outcome = outcomeOf(entry.status, entry.error_type, entry.error);
  return el(
    "tr",
    { "data-testid": "history-row", dataset: { requestId: entry.request_id, outcome } },
    el("td", {}, el("time", { datetime: entry.created_at }, when(entry.created_at))),
    el("td", {}, el("code", {}, entry.endpoint_id)),
    el(
      "td",
      {},
      badge(outcome, outcome, "history-status"),
      entry.error ? el("div", { class: "muted" }, entry.error) : null,
    ),
    el("td", {}, el("code", { title: entry.request_id }, entry.request_id.slice(0, 8))),
    el("td", {}, el("a", { href: reopenUrl(entry), "data-testid": "history-open" }, "Open")),
  );
}

export function mountHistory(section) {
  const body = el("tbody", {});
  const message = el("p", { class: "muted", "data-testid": "history-message" });
  const refresh = el("button", { type: "button", class: "secondary", "data-testid": "history-refresh" }, "Refresh");
  const table = el(
    "table",
    { class: "history", "data-testid": "history" },
    el("thead", {}, el("tr", {}, ...HEADINGS.map((heading) => el("th", { scope: "col" }, heading)))),
    body,
  );
  section.replaceChildren(
    el("div", { class: "section-head" }, el("h2", { id: "history-title" }, "History"), refresh),
    message,
    table,
  );

  async function load() {
    message.textContent = "Loading…";
    try {
      const { requests } = await api(`/api/requests?limit=${HISTORY_LIMIT}`);
      body.replaceChildren(...requests.map(row));
      message.textContent = requests.length ? "" : "No requests yet.";
      table.hidden = !requests.length;
    } catch (error) {
      body.replaceChildren();
      table.hidden = true;
      message.textContent =
        error.status === 401 ? "Set your API key to see your requests." : `History unavailable: ${error.message}`;
    }
  }

  refresh.addEventListener("click", load);
  load();
  return { reload: load };
}

// One request out of the history, for reopening it (with the input it was made with).
export async function findInHistory(requestId) {
  const { requests } = await api(`/api/requests?limit=500`);
  return requests.find((entry) => entry.request_id === requestId) || null;
}
