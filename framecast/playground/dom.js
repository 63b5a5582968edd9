// A tiny element builder. Text always goes in as text (never innerHTML), so server data cannot become markup.

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function showError(node, error) {
  node.textContent = error ? String(error.message || error) : "";
  node.hidden = !error;
}

// A request's state in words: COMPLETED covers success, failure and cancellation alike.
export function outcomeOf(status, errorType, error) {
  if (status !== "COMPLETED") return status === "IN_PROGRESS" ? "running" : "queued";
  if (errorType === "client_cancelled") return "cancelled";
  return error || errorType ? "failed" : "done";
}

export function badge(text, kind, testid) {
  return el("span", { class: `badge badge-${kind}`, "data-testid": testid }, text);
}

export async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    // No clipboard (plain http, or permission refused): select the text so Ctrl-C works.
    const pre = button.closest(".code-block")?.querySelector("pre");
    if (pre) getSelection().selectAllChildren(pre);
    button.textContent = "Press Ctrl-C";
  }
  setTimeout(() => (button.textContent = label), 1500);
}
