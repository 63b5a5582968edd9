// The server's public API, as any client uses it: the key in `Authorization: Key <key>`.

const KEY_STORAGE = "framecast.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Key ${key}` } : {};
}

export class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }
}

// fal's error shapes: {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}]} (a 422 names every field).
export function describeError(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${fieldOf(item) || "input"}: ${item.msg || JSON.stringify(item)}`).join("; ");
  }
  if (typeof detail === "string" && detail) return status === 401 ? `${detail} (set your API key above)` : detail;
  return `HTTP ${status}`;
}

export function fieldOf(item) {
  const loc = Array.isArray(item.loc) ? item.loc.filter((part) => part !== "body") : [];
  return loc.length ? String(loc[0]) : "";
}

async function readBody(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text;
  }
}

// JSON in, JSON out; any status outside 2xx throws an ApiError with the server's own words.
export async function api(url, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url, init);
  const body = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// The result URL answers the error body with its own status (e.g. 499 for a cancelled job): both are results.
export async function fetchResult(responseUrl) {
  const response = await fetch(responseUrl, { headers: authHeaders() });
  return { status: response.status, body: await readBody(response) };
}

// fal's two-step upload: where to PUT the bytes, then the bytes (the upload URL authorises itself).
export async function uploadFile(file) {
  const ticket = await api("/storage/upload/initiate", {
    method: "POST",
    json: { content_type: file.type || "application/octet-stream", file_name: file.name || "upload" },
  });
  const response = await fetch(ticket.upload_url, {
    method: "PUT",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  return ticket.file_url;
}

// The status stream (server-sent events). EventSource cannot send the key, so read the body ourselves:
// events are separated by a blank line, and only their `data:` lines matter (`: keep-alive` is a comment).
// Calls onStatus for each status object; resolves when the server closes the stream (after COMPLETED).
export async function streamStatus(statusUrl, onStatus, { signal } = {}) {
  const response = await fetch(`${statusUrl}/stream?logs=1`, { headers: authHeaders(), signal });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "" && data.length) {
        onStatus(JSON.parse(data.join("\n")));
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}

// fal's status, result and cancel URLs use only owner/alias of the endpoint id.
export function appPath(endpointId) {
  return endpointId.split("/").slice(0, 2).join("/");
}

export function requestUrls(endpointId, requestId) {
  const responseUrl = `${location.origin}/queue/${appPath(endpointId)}/requests/${requestId}`;
  return { response_url: responseUrl, status_url: `${responseUrl}/status`, cancel_url: `${responseUrl}/cancel` };
}
