// The API key, asked once and kept in this browser (localStorage); every API call sends it.

import { getKey, setKey } from "./api.js";
import { el } from "./dom.js";

export function mountKeyBar(slot, onChange) {
  const input = el("input", {
    id: "api-key",
    "data-testid": "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "fc_…:…",
  });
  const state = el("span", { id: "api-key-state", "data-testid": "api-key-state", class: "muted", role: "status" });
  const forget = el("button", { type: "button", class: "secondary", "data-testid": "forget-key" }, "Forget");
  const form = el(
    "form",
    { class: "keybar", "data-testid": "key-form" },
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { type: "submit", "data-testid": "save-key" }, "Save"),
    forget,
    state,
  );

  function render() {
    const key = getKey();
    // Only the public id (before the colon) is shown; the secret stays in the password field's storage.
    state.textContent = key ? `Using ${key.split(":")[0]}` : "No key set";
    forget.hidden = !key;
    input.value = "";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return input.focus();
    setKey(key);
    render();
    onChange?.();
  });
  forget.addEventListener("click", () => {
    setKey("");
    render();
    onChange?.();
  });
  render();
  slot.replaceChildren(form);
}
