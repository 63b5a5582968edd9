// Drives the unmodified @fal-ai/client against a framecast server and prints one JSON object of results.
//
//   FRAMECAST_API_KEY=... NODE_EXTRA_CA_CERTS=ca.pem node exercise.mjs <middleware|proxy> <server URL> <image.png>
//
// Each scenario's entry holds what the client returned (or the error it threw) and the HTTP calls it made;
// tests/e2e/test_js_client.py asserts on them.
import { readFile } from "node:fs/promises";
import { CLIENTS } from "./local_fal.mjs";

const ENDPOINT = "fal-ai/wan-i2v";
const [mode, local, imagePath] = process.argv.slice(2);
if (!(mode in CLIENTS) || !local || !imagePath) {
  console.error("usage: node exercise.mjs <middleware|proxy> <server URL> <image.png>");
  process.exit(2);
}

// A spy on the global fetch the client picks up, so the test can see where each call really went.
// Installed before the client is made; the client itself is left as it is.
const calls = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const headers = new Headers(init.headers);
  const body = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
  calls.push({
    method: init.method ?? "GET",
    url: String(url),
    target: headers.get("x-fal-target-url"),
    image_url: body?.image_url,
  });
  return realFetch(url, init);
};

const fal = CLIENTS[mode](local, process.env.FRAMECAST_API_KEY);
const png = await readFile(imagePath);
const pngBlob = () => new Blob([png], { type: "image/png" });
const wanInput = (overrides) => ({
  prompt: "a cat walking in the snow",
  image_url: `data:image/png;base64,${png.toString("base64")}`,
  resolution: "480p",
  aspect_ratio: "16:9",
  num_inference_steps: 2,
  ...overrides,
});
const isHolding = (status) =>
  status.status === "IN_PROGRESS" && (status.logs ?? []).some((log) => log.message.includes("holding"));

const scenarios = {
  async subscribePolling() {
    const updates = [];
    let enqueued = null;
    const result = await fal.subscribe(ENDPOINT, {
      input: wanInput({ seed: 11 }),
      logs: true,
      pollInterval: 100,
      onEnqueue: (requestId) => (enqueued = requestId),
      onQueueUpdate: (update) => updates.push(update),
    });
    return { enqueued, updates, result };
  },

  async subscribeStreaming() {
    const updates = [];
    let enqueued = null;
    const result = await fal.subscribe(ENDPOINT, {
      input: wanInput({ seed: 12 }),
      logs: true,
      mode: "streaming",
      onEnqueue: (requestId) => (enqueued = requestId),
      onQueueUpdate: (update) => updates.push(update),
    });
    return { enqueued, updates, result };
  },

  async queue() {
    const submitted = await fal.queue.submit(ENDPOINT, { input: wanInput({ seed: 13 }), priority: "low" });
    const requestId = submitted.request_id;
    const firstStatus = await fal.queue.status(ENDPOINT, { requestId, logs: true });
    const finalStatus = await fal.queue.subscribeToStatus(ENDPOINT, { requestId, logs: true, pollInterval: 100 });
    const result = await fal.queue.result(ENDPOINT, { requestId });
    return { submitted, firstStatus, finalStatus, result };
  },

  async cancel() {
    const submitted = await fal.queue.submit(ENDPOINT, {
      input: wanInput({ seed: 14 }),
      headers: { "X-Framecast-Test-Fault": "block_at_step=1" },
    });
    const requestId = submitted.request_id;
    let cancelled = null;
    // The job never finishes on its own: it ends only because of the cancel sent once it is held at its step.
    const finalStatus = await fal.queue.subscribeToStatus(ENDPOINT, {
      requestId,
      logs: true,
      pollInterval: 100,
      onQueueUpdate: (status) => {
        if (cancelled === null && isHolding(status)) {
          cancelled = fal.queue.cancel(ENDPOINT, { requestId }).then(() => "sent", errorEntry);
        }
      },
    });
    return {
      requestId,
      cancel: await cancelled,
      finalStatus,
      result: await fal.queue.result(ENDPOINT, { requestId }).catch(errorEntry),
      cancelAgain: await fal.queue.cancel(ENDPOINT, { requestId }).catch(errorEntry),
    };
  },

  async run() {
    return { result: await fal.run(ENDPOINT, { input: wanInput({ seed: 15 }) }) };
  },

  async storageUpload() {
    const fileUrl = await fal.storage.upload(pngBlob());
    const result = await fal.run(ENDPOINT, { input: wanInput({ image_url: fileUrl, seed: 16 }) });
    return { fileUrl, result };
  },

  async blobInInput() {
    const result = await fal.subscribe(ENDPOINT, {
      input: wanInput({ image_url: pngBlob(), seed: 17 }),
      pollInterval: 100,
    });
    return { result };
  },
};

function errorEntry(error) {
  return { error: { name: error.name, message: error.message, status: error.status, body: error.body } };
}

const results = { mode };
for (const [name, scenario] of Object.entries(scenarios)) {
  const first = calls.length;
  const outcome = await scenario().catch(errorEntry);
  results[name] = { ...outcome, calls: calls.slice(first) };
}
console.log(JSON.stringify(results));
