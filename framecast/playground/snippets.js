// Code that makes the same request from outside the browser, in the README's configurations:
// fal-client through its environment variables, @fal-ai/client with the URL-rewriting requestMiddleware, curl.
// The key is never written into the code: each snippet reads FAL_KEY from the environment.

const INDENT = "    ";

// JSON -> a Python literal. A JSON string literal is also a valid Python one.
export function pythonLiteral(value, depth = 0) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const inner = INDENT.repeat(depth + 1);
  const outer = INDENT.repeat(depth);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((item) => `${inner}${pythonLiteral(item, depth + 1)},\n`).join("")}${outer}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  const lines = entries.map(([key, item]) => `${inner}${JSON.stringify(key)}: ${pythonLiteral(item, depth + 1)},\n`);
  return `{\n${lines.join("")}${outer}}`;
}

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

// History shortens data URIs: say so rather than emit a string the server would refuse.
function placeholderInput(input) {
  const cleaned = {};
  for (const [name, value] of Object.entries(input)) {
    const shortened = typeof value === "string" && value.startsWith("data:") && value.includes("…");
    cleaned[name] = shortened ? "<a data URI or URL of your file>" : value;
  }
  return cleaned;
}

function keyExport(origin) {
  return `export FAL_KEY="<your key>"   # fc_…:… from \`framecast keys create\`\n` +
    `# If ${origin} has a certificate from a private CA, trust it (README):`;
}

export function pythonSnippet({ origin, host, endpointId, input, options = {} }) {
  const shell = [
    keyExport(origin),
    "#   export SSL_CERT_FILE=/path/to/ca.pem",
    `export FAL_QUEUE_RUN_HOST=${host}/queue`,
    `export FAL_RUN_HOST=${host}/run`,
  ].join("\n");
  const extra = [];
  if (options.priority) extra.push(`${INDENT}priority=${JSON.stringify(options.priority)},`);
  if (options.startTimeout) extra.push(`${INDENT}start_timeout=${options.startTimeout},`);
  if (options.headers && Object.keys(options.headers).length) {
    extra.push(`${INDENT}headers=${pythonLiteral(options.headers, 1)},`);
  }
  const python = [
    "import fal_client",
    "",
    "result = fal_client.subscribe(",
    `${INDENT}${JSON.stringify(endpointId)},`,
    `${INDENT}arguments=${pythonLiteral(placeholderInput(input), 1)},`,
    `${INDENT}with_logs=True,`,
    `${INDENT}on_queue_update=print,`,
    ...extra,
    ")",
    "print(result)",
  ].join("\n");
  return [
    { label: "Shell", text: shell },
    { label: "Python", text: python },
  ];
}

export function javascriptSnippet({ origin, endpointId, input, options = {} }) {
  const shell = [
    keyExport(origin),
    "#   export NODE_EXTRA_CA_CERTS=/path/to/ca.pem",
    "npm install @fal-ai/client",
  ].join("\n");
  const call = { input: placeholderInput(input), logs: true };
  if (options.priority) call.priority = options.priority;
  if (options.startTimeout) call.startTimeout = options.startTimeout;
  if (options.headers && Object.keys(options.headers).length) call.headers = options.headers;
  // A function cannot go through JSON: add it after the last property.
  const onQueueUpdate = 'onQueueUpdate: (update) => console.log(update.status, update.logs?.at(-1)?.message ?? "")';
  const body = JSON.stringify(call, null, 2).replace(/\n}$/, `,\n  ${onQueueUpdate},\n}`);
  const js = [
    'import { createFalClient } from "@fal-ai/client";',
    `const LOCAL = ${JSON.stringify(origin)};`,
    "",
    "// Rewrite fal's URLs to this server's (README: Pointing @fal-ai/client at Framecast).",
    "const fal = createFalClient({",
    "  credentials: process.env.FAL_KEY,",
    "  requestMiddleware: async (request) => ({ ...request, url: request.url",
    String.raw`    .replace(/^https:\/\/queue\.fal\.run\//, ` + "`${LOCAL}/queue/`)",
    String.raw`    .replace(/^https:\/\/fal\.run\//, ` + "`${LOCAL}/run/`)",
    String.raw`    .replace(/^https:\/\/rest\.fal\.ai\//, ` + "`${LOCAL}/`) }),",
    "});",
    "",
    `const { data, requestId } = await fal.subscribe(${JSON.stringify(endpointId)}, ${body});`,
    "console.log(requestId, JSON.stringify(data, null, 2));",
  ].join("\n");
  return [
    { label: "Shell", text: shell },
    { label: "JavaScript (run.mjs)", text: js },
  ];
}

export function curlSnippet({ origin, endpointId, input, options = {} }) {
  const headers = ['-H "Authorization: Key $FAL_KEY"', '-H "Content-Type: application/json"'];
  if (options.priority) headers.push(`-H ${shellQuote(`X-Fal-Queue-Priority: ${options.priority}`)}`);
  if (options.startTimeout) headers.push(`-H ${shellQuote(`X-Fal-Request-Start-Timeout: ${options.startTimeout}`)}`);
  for (const [name, value] of Object.entries(options.headers || {})) {
    headers.push(`-H ${shellQuote(`${name}: ${value}`)}`);
  }
  const text = [
    keyExport(origin),
    "#   add --cacert /path/to/ca.pem to each curl",
    "",
    "# Submit; the answer holds the request's status_url, response_url and cancel_url (jq picks one out).",
    `RESPONSE_URL=$(curl -sS -X POST ${shellQuote(`${origin}/queue/${endpointId}`)} \\`,
    ...headers.map((header) => `  ${header} \\`),
    `  -d ${shellQuote(JSON.stringify(placeholderInput(input)))} | jq -r .response_url)`,
    "",
    "# Follow the status as server-sent events (closed after COMPLETED), then fetch the result.",
    'curl -sS -N -H "Authorization: Key $FAL_KEY" "$RESPONSE_URL/status/stream?logs=1"',
    'curl -sS -H "Authorization: Key $FAL_KEY" "$RESPONSE_URL"',
  ].join("\n");
  return [{ label: "Shell", text }];
}

export function allSnippets(request) {
  return {
    python: pythonSnippet(request),
    javascript: javascriptSnippet(request),
    curl: curlSnippet(request),
  };
}
