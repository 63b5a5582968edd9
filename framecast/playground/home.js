// `/`: every endpoint with its readiness (from the public catalogue, `GET /models`), and the history.

import { api } from "./api.js";
import { badge, el, showError } from "./dom.js";
import { mountHistory } from "./history.js";
import { mountKeyBar } from "./keybar.js";

function endpointRow(entry) {
  const kind = entry.accepting ? "ok" : "warn";
  return el(
    "tr",
    { "data-testid": "endpoint-row", dataset: { endpointId: entry.endpoint_id, state: entry.state } },
    el(
      "td",
      {},
      el("a", { href: `/playground/${entry.endpoint_id}`, "data-testid": "endpoint-link" }, entry.endpoint_id),
      el("div", { class: "muted" }, entry.title || ""),
    ),
    el(
      "td",
      {},
      badge(entry.state, kind, "endpoint-state"),
      entry.workers_ready === undefined
        ? null
        : el("div", { class: "muted" }, `${entry.workers_ready} worker(s) ready`),
      entry.reason ? el("div", { class: "reason", "data-testid": "endpoint-reason" }, entry.reason) : null,
    ),
    el("td", {}, el("code", {}, entry.engine || "")),
    el("td", { class: "model" }, el("code", {}, entry.model || "")),
    el("td", {}, entry.served_by || ""),
  );
}

async function loadModels() {
  const rows = document.getElementById("endpoint-rows");
  try {
    const { endpoints } = await api("/models");
    rows.replaceChildren(...endpoints.map(endpointRow));
  } catch (error) {
    rows.replaceChildren();
    showError(document.getElementById("models-error"), error);
  }
}

const history = mountHistory(document.getElementById("history"));
mountKeyBar(document.getElementById("key-slot"), () => history.reload());
loadModels();
