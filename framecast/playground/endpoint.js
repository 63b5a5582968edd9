// `/playground/<endpoint id>`: the form from the endpoint's input schema, submit through the public queue API,
// the live request, and the history. `?request=<id>` reopens an earlier request.

import { api, ApiError, fieldOf, requestUrls } from "./api.js";
import { showError } from "./dom.js";
import { buildForm } from "./form.js";
import { findInHistory, mountHistory, reopenUrl } from "./history.js";
import { mountKeyBar } from "./keybar.js";
import { RequestView } from "./request-view.js";

const endpointId = decodeURIComponent(location.pathname.replace(/^\/playground\//, "")).replace(/\/+$/, "");
const formElement = document.getElementById("input-form");
const formError = document.getElementById("form-error");
const pageError = document.getElementById("page-error");
const submitButton = document.getElementById("submit");
const requestSlot = document.getElementById("request-slot");

const historyList = mountHistory(document.getElementById("history"));
mountKeyBar(document.getElementById("key-slot"), () => historyList.reload());

let form = null;
let current = null;

function inputSchema(doc) {
  const schemas = doc.components?.schemas || {};
  const ref = doc.paths?.[`/${endpointId}`]?.post?.requestBody?.content?.["application/json"]?.schema?.$ref;
  const name = ref ? ref.split("/").pop() : Object.keys(schemas).find((key) => key.endsWith("Input"));
  return schemas[name];
}

async function loadEndpoint() {
  document.getElementById("endpoint-id").textContent = endpointId;
  const [doc, catalogue] = await Promise.all([
    api(`/api/openapi/queue/openapi.json?endpoint_id=${encodeURIComponent(endpointId)}`),
    api("/models").catch(() => null),
  ]);
  const entry = catalogue?.endpoints.find((item) => item.endpoint_id === endpointId);
  const schema = inputSchema(doc);
  document.title = `${entry?.title || endpointId} · Framecast playground`;
  document.getElementById("endpoint-title").textContent = entry?.title || endpointId;
  document.getElementById("endpoint-description").textContent = schema.description || doc.info?.description || "";
  if (entry) {
    const state = document.getElementById("endpoint-state");
    state.textContent = `${entry.state} · ${entry.engine} · ${entry.served_by}`;
    state.className = `badge badge-${entry.accepting ? "ok" : "warn"}`;
    const reason = document.getElementById("endpoint-reason");
    reason.textContent = entry.reason || "";
    reason.hidden = !entry.reason;
  }
  form = buildForm(document.getElementById("fields"), schema);
}

// The Advanced section: the headers fal's clients send for priority and start timeout, and any others.
function readOptions() {
  const options = { headers: {} };
  const priority = document.getElementById("opt-priority").value;
  const timeout = document.getElementById("opt-start-timeout").valueAsNumber;
  if (priority) options.priority = priority;
  if (Number.isFinite(timeout)) options.startTimeout = timeout;
  for (const line of document.getElementById("opt-headers").value.split("\n")) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`Extra headers: "${line.trim()}" is not "Name: value"`);
    options.headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return options;
}

function requestHeaders(options) {
  const headers = { ...options.headers };
  if (options.priority) headers["X-Fal-Queue-Priority"] = options.priority;
  if (options.startTimeout) headers["X-Fal-Request-Start-Timeout"] = String(options.startTimeout);
  return headers;
}

// `editable`: a reopened request offers to put its input back into the form (a new one is already there).
function open(request, { editable = false } = {}) {
  current?.close();
  current = new RequestView(requestSlot, request, {
    onStatusChange: () => historyList.reload(),
    onLoadInput: editable && form ? (input) => form.load(input) : null,
  });
  current.follow();
}

async function submit(event) {
  event.preventDefault();
  showError(formError, null);
  form.clearErrors();
  submitButton.disabled = true;
  try {
    let values = null;
    try {
      // Waits for uploads still in flight, so their URLs are in the input.
      values = await form.values();
    } catch (error) {
      // A JSON field that does not parse is flagged by the browser's validation below; anything else is shown.
      if (!(error instanceof SyntaxError)) throw error;
    }
    if (!formElement.reportValidity() || values === null) return;
    const options = readOptions();
    const headers = requestHeaders(options);
    const submitted = await api(`/queue/${endpointId}`, { method: "POST", json: values, headers });
    // The URL now names the request, so a reload (or a shared link) reopens it.
    history.replaceState(null, "", `?request=${encodeURIComponent(submitted.request_id)}`);
    open({ ...submitted, endpointId, input: values, options });
    // On a narrow screen the request is under the form: bring it into view.
    requestSlot.scrollIntoView({ block: "nearest" });
  } catch (error) {
    if (error instanceof ApiError && error.status === 422 && Array.isArray(error.body?.detail)) {
      const messages = {};
      for (const item of error.body.detail) {
        const name = fieldOf(item);
        if (name) messages[name] = messages[name] ? `${messages[name]}; ${item.msg}` : item.msg;
      }
      form.showErrors(messages);
    }
    showError(formError, error);
  } finally {
    submitButton.disabled = false;
  }
}

async function reopen(requestId) {
  let entry = null;
  try {
    entry = await findInHistory(requestId);
  } catch {
    // No history (no key yet, or an older server): the request can still be followed by its id.
  }
  if (entry && entry.endpoint_id !== endpointId) {
    location.replace(reopenUrl(entry));
    return;
  }
  const urls = entry || requestUrls(endpointId, requestId);
  open({
    endpointId,
    request_id: requestId,
    status_url: urls.status_url,
    response_url: urls.response_url,
    cancel_url: urls.cancel_url,
    input: entry?.input,
  }, { editable: true });
}

formElement.addEventListener("submit", submit);
document.getElementById("reset").addEventListener("click", () => {
  form?.reset();
  form?.clearErrors();
});

try {
  await loadEndpoint();
  const requestId = new URLSearchParams(location.search).get("request");
  if (requestId) await reopen(requestId);
} catch (error) {
  showError(pageError, error);
}
document.body.dataset.ready = "true";
