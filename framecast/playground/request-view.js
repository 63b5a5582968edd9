// One request, live: queue position, a progress bar with step and ETA, logs, FramePack's section previews,
// then the video with a download link; Cancel; the input and result JSON and code that reproduces it.

import { api, ApiError, fetchResult, streamStatus } from "./api.js";
import { badge, copyText, el, outcomeOf } from "./dom.js";
import { allSnippets } from "./snippets.js";

const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000];
const URL_PATTERN = /(https?:\/\/[^\s;,]+)/g;

function seconds(value) {
  return value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`;
}

// Log lines carry preview URLs: make them links (built as elements, never as HTML).
function logLine(entry) {
  const parts = entry.message
    .split(URL_PATTERN)
    .map((part, index) => (index % 2 ? el("a", { href: part, target: "_blank", rel: "noopener" }, part) : part));
  const time = entry.timestamp ? new Date(entry.timestamp).toLocaleTimeString() : "";
  const level = entry.level || "INFO";
  return el(
    "div",
    { class: `log log-${level.toLowerCase()}`, "data-testid": "log-line" },
    el("span", { class: "muted" }, `${time} ${level} `),
    ...parts,
  );
}

function codeBlock(block, testid) {
  const pre = el("pre", { "data-testid": testid }, el("code", {}, block.text));
  const copy = el(
    "button",
    { type: "button", class: "secondary copy", "data-testid": `${testid}-copy` },
    `Copy ${block.label}`,
  );
  copy.addEventListener("click", () => copyText(block.text, copy));
  const head = el("div", { class: "code-head" }, el("span", {}, block.label), copy);
  return el("div", { class: "code-block" }, head, pre);
}

const CLIENT_NAMES = { python: "Python (fal-client)", javascript: "JavaScript (@fal-ai/client)", curl: "curl" };

function codeTabs(snippets) {
  const tabs = el("div", { role: "tablist", class: "tabs" });
  const panels = [];
  for (const [key, blocks] of Object.entries(snippets)) {
    const tab = el(
      "button",
      { type: "button", role: "tab", id: `tab-${key}`, "aria-controls": `panel-${key}`, "data-testid": `tab-${key}` },
      CLIENT_NAMES[key],
    );
    const panel = el(
      "div",
      { role: "tabpanel", id: `panel-${key}`, "aria-labelledby": `tab-${key}`, "data-testid": `code-${key}` },
      ...blocks.map((block, index) => codeBlock(block, `code-${key}-${index}`)),
    );
    tab.addEventListener("click", () => select(key));
    tabs.append(tab);
    panels.push([key, tab, panel]);
  }
  function select(chosen) {
    for (const [key, tab, panel] of panels) {
      tab.setAttribute("aria-selected", String(key === chosen));
      panel.hidden = key !== chosen;
    }
  }
  select("python");
  return el("div", { class: "code" }, tabs, ...panels.map(([, , panel]) => panel));
}

function video(testid) {
  // Muted and autoplaying, so it starts by itself (browsers allow that only muted; the muted attribute alone only
  // sets defaultMuted). The controls give sound and seeking, which the server's Range support makes work.
  const node = el("video", { "data-testid": testid, controls: true, autoplay: true, loop: true, playsinline: true });
  node.muted = true;
  return node;
}

export class RequestView {
  // request: {endpointId, request_id, status_url, response_url, cancel_url, input?, options?}
  constructor(slot, request, { onStatusChange, onLoadInput } = {}) {
    this.request = request;
    this.onStatusChange = onStatusChange;
    this.onLoadInput = onLoadInput;
    this.abort = new AbortController();
    this.previewUrl = null;
    this.logCount = -1;
    this.build(slot);
  }

  build(slot) {
    const r = this.request;
    this.badge = badge("connecting", "queued", "request-status");
    this.position = el("p", { "data-testid": "queue-position", hidden: true });
    this.bar = el("progress", { "data-testid": "progress-bar", max: 1, value: 0, "aria-label": "Progress" });
    this.progressText = el("span", { "data-testid": "progress-text", "aria-live": "polite" }, "Waiting…");
    this.cancelButton = el("button", { type: "button", class: "danger", "data-testid": "cancel" }, "Cancel");
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.error = el("p", { class: "error", role: "alert", "data-testid": "request-error", hidden: true });
    this.previewVideo = video("preview-video");
    this.previewCaption = el("figcaption", { "data-testid": "preview-caption" });
    this.preview = el("figure", { "data-testid": "preview", hidden: true }, this.previewCaption, this.previewVideo);
    this.resultVideo = video("result-video");
    this.resultCaption = el("figcaption", { "data-testid": "result-caption" });
    this.download = el("a", { class: "button", "data-testid": "download", download: "" }, "Download MP4");
    this.result = el(
      "figure",
      { "data-testid": "result", hidden: true },
      this.resultCaption,
      this.resultVideo,
      el("p", {}, this.download),
    );
    this.logs = el("div", { class: "logs", "data-testid": "logs", role: "log", "aria-live": "off" });
    const input = r.input ? JSON.stringify(r.input, null, 2) : "(not known: this request is not in the history)";
    this.inputJson = el("pre", { "data-testid": "input-json" }, input);
    this.resultJson = el("pre", { "data-testid": "result-json" }, "(not finished)");
    this.code = el("div", {});
    if (r.input) {
      const request = { endpointId: r.endpointId, input: r.input, options: r.options };
      this.code.append(codeTabs(allSnippets({ origin: location.origin, host: location.host, ...request })));
    } else {
      this.code.append(el("p", { class: "muted" }, "No code: the input of this request is not known."));
    }

    this.root = el(
      "article",
      { class: "request", "data-testid": "request", dataset: { requestId: r.request_id, status: "", outcome: "" } },
      el("header", { class: "request-head" }, el("code", { "data-testid": "request-id" }, r.request_id), this.badge),
      this.position,
      el("div", { class: "progress" }, this.bar, this.progressText),
      el("div", { class: "actions" }, this.cancelButton, this.loadInputButton()),
      this.error,
      this.result,
      this.preview,
      el("details", { open: true }, el("summary", {}, "Logs"), this.logs),
      el("details", { "data-testid": "input-details" }, el("summary", {}, "Input JSON"), this.inputJson),
      el("details", { "data-testid": "result-details" }, el("summary", {}, "Result JSON"), this.resultJson),
      el("details", { open: true, "data-testid": "code-details" }, el("summary", {}, "Code"), this.code),
    );
    slot.replaceChildren(this.root);
  }

  loadInputButton() {
    if (!this.request.input || !this.onLoadInput) return null;
    const attributes = { type: "button", class: "secondary", "data-testid": "load-input" };
    const button = el("button", attributes, "Edit and run again");
    button.addEventListener("click", () => this.onLoadInput(this.request.input));
    return button;
  }

  close() {
    this.abort.abort();
  }

  // Follow the status stream until COMPLETED; reconnect if the connection drops (a proxy, a server restart).
  async follow() {
    let failures = 0;
    while (!this.abort.signal.aborted) {
      try {
        const onStatus = (status) => {
          failures = 0;
          this.render(status);
        };
        await streamStatus(this.request.status_url, onStatus, { signal: this.abort.signal });
        if (this.completed) return this.finish();
      } catch (error) {
        if (this.abort.signal.aborted) return;
        if (error instanceof ApiError && error.status !== 503 && error.status !== 502) {
          this.fail(error);
          return;
        }
        this.progressText.textContent = "Connection lost; reconnecting…";
      }
      const delay = RECONNECT_DELAYS_MS[Math.min(failures++, RECONNECT_DELAYS_MS.length - 1)];
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  render(status) {
    const changed = status.status !== this.status?.status;
    this.status = status;
    this.completed = status.status === "COMPLETED";
    const outcome = outcomeOf(status.status, status.error_type, status.error);
    this.root.dataset.status = status.status;
    if (changed) this.onStatusChange?.(status.status);
    this.root.dataset.outcome = outcome;
    this.badge.textContent = outcome;
    this.badge.className = `badge badge-${outcome}`;
    this.position.hidden = status.status !== "IN_QUEUE";
    if (status.status === "IN_QUEUE") {
      const ahead = status.queue_position ?? 0;
      this.position.textContent = ahead ? `Queued: ${ahead} request(s) ahead` : "Queued: next to run";
    }
    const progress = status.progress;
    if (progress && progress.total_steps) {
      this.bar.max = progress.total_steps;
      this.bar.value = progress.step;
      const eta = typeof progress.eta_s === "number" ? ` · ETA ${seconds(progress.eta_s)}` : "";
      this.progressText.textContent = `Step ${progress.step}/${progress.total_steps}${eta}`;
      this.root.dataset.step = String(progress.step);
    } else if (status.status === "IN_PROGRESS") {
      this.progressText.textContent = "Starting…";
    }
    if (progress?.preview?.url && progress.preview.url !== this.previewUrl) this.showPreview(progress.preview);
    const logs = status.logs || [];
    if (logs.length !== this.logCount) {
      this.logCount = logs.length;
      this.logs.replaceChildren(...logs.map(logLine));
      this.logs.scrollTop = this.logs.scrollHeight;
    }
    // Nothing to cancel once it has finished.
    this.cancelButton.hidden = this.completed;
    if (this.completed) {
      this.error.hidden = !status.error;
      const kind = status.error_type ? ` (${status.error_type})` : "";
      this.error.textContent = status.error ? `${status.error}${kind}` : "";
    }
  }

  showPreview(preview) {
    this.previewUrl = preview.url;
    this.previewVideo.src = preview.url;
    const where = preview.placement === "end" ? " (the end of the video: FramePack renders backwards)" : "";
    const done = `${preview.section}/${preview.sections}`;
    this.previewCaption.textContent = `Preview after section ${done}: ${preview.num_frames} frames${where}`;
    this.preview.hidden = false;
  }

  async finish() {
    const status = this.status;
    const { status: code, body } = await fetchResult(this.request.response_url);
    this.resultJson.textContent = JSON.stringify(body, null, 2);
    this.root.querySelector("[data-testid=result-details]").open = true;
    const video = code === 200 ? body?.video : body?.partial_output?.video;
    if (code === 200) {
      this.bar.value = this.bar.max;
      const took = status.metrics?.inference_time;
      this.progressText.textContent = took ? `Done in ${seconds(took)}` : "Done";
    } else {
      this.progressText.textContent = code === 499 ? "Cancelled" : `Failed (HTTP ${code})`;
      if (!status.error) this.fail(new ApiError(code, body));
    }
    if (video?.url) {
      const partial = "Partial output: the sections finished before the cancel";
      this.resultCaption.textContent = code === 200 ? "Result" : partial;
      this.resultVideo.src = video.url;
      this.download.href = video.url;
      this.download.setAttribute("download", video.file_name || "video.mp4");
      this.result.hidden = false;
      // The final video replaces the section previews.
      this.preview.hidden = true;
      this.previewVideo.removeAttribute("src");
      this.previewVideo.load();
    }
    this.root.dataset.finished = "true";
  }

  fail(error) {
    this.error.textContent = error.message;
    this.error.hidden = false;
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await api(this.request.cancel_url, { method: "PUT" });
      this.progressText.textContent = "Cancellation requested…";
    } catch (error) {
      // 400 ALREADY_COMPLETED: it finished first; the stream shows how.
      if (!(error instanceof ApiError && error.status === 400)) {
        this.fail(error);
        this.cancelButton.disabled = false;
      }
    }
  }
}
