// A form generated from an endpoint's input schema (fal's per-endpoint OpenAPI document): fields in
// `x-fal-order-properties` order, defaults filled in, enums as selects, number ranges as min/max (the browser
// enforces them before submit), descriptions under each field, required fields marked.

import { el } from "./dom.js";
import { imageInput } from "./image-input.js";

export function isImageField(name) {
  return name === "image" || /(^|_)(image|mask)_url$/.test(name);
}

// Read by screen readers, not shown.
function hiddenText(text) {
  return el("span", { class: "visually-hidden" }, text);
}

// `X | null` comes as anyOf [X, {type: null}]: the field may be left empty.
function unwrap(schema) {
  const variants = schema.anyOf || schema.oneOf;
  if (!variants) return { type: schema, nullable: false };
  const concrete = variants.filter((variant) => variant.type !== "null");
  const nullable = concrete.length < variants.length;
  if (concrete.length !== 1) return { type: {}, nullable };
  return { type: { ...concrete[0], description: schema.description, default: schema.default }, nullable };
}

function kindOf(name, type) {
  if (isImageField(name) && type.type === "string") return "image";
  if (Array.isArray(type.enum)) return "enum";
  if (type.type === "boolean") return "boolean";
  if (type.type === "integer" || type.type === "number") return "number";
  if (type.type === "string") return "string";
  return "json";
}

function numberField(common, type) {
  const min = type.minimum ?? type.exclusiveMinimum;
  const max = type.maximum ?? type.exclusiveMaximum;
  const input = el("input", { ...common, type: "number", min, max, step: type.type === "integer" ? 1 : "any" });
  // HTML has no exclusive bounds: check those ourselves, in the browser's own validation message.
  input.addEventListener("input", () => {
    const value = input.valueAsNumber;
    const { exclusiveMinimum: low, exclusiveMaximum: high } = type;
    let problem = "";
    if (low !== undefined && value <= low) problem = `Must be greater than ${low}.`;
    if (high !== undefined && value >= high) problem = `Must be less than ${high}.`;
    input.setCustomValidity(problem);
  });
  return input;
}

function rangeHint(type) {
  const low = type.minimum ?? type.exclusiveMinimum;
  const high = type.maximum ?? type.exclusiveMaximum;
  if (low === undefined && high === undefined) return "";
  const left = low === undefined ? "" : `${low} ${type.exclusiveMinimum !== undefined ? "<" : "≤"} `;
  const right = high === undefined ? "" : ` ${type.exclusiveMaximum !== undefined ? "<" : "≤"} ${high}`;
  return `${left}value${right}`;
}

function buildField(name, schema, required) {
  const { type, nullable } = unwrap(schema);
  const kind = kindOf(name, type);
  const id = `field-${name}`;
  const descriptionId = `desc-${name}`;
  const common = { id, name, "data-testid": id, "aria-describedby": descriptionId, required: required || undefined };
  let control;
  let widget = null;

  if (kind === "image") {
    widget = imageInput(name, { required, describedBy: descriptionId });
    control = widget.element;
  } else if (kind === "enum") {
    // Option values are JSON, so an enum of numbers submits numbers.
    const options = type.enum.map((value) => el("option", { value: JSON.stringify(value) }, String(value)));
    // An empty choice only where leaving the field out means something the listed values do not.
    if (nullable || (!required && schema.default === undefined)) {
      options.unshift(el("option", { value: "" }, nullable ? "(none)" : "(server default)"));
    }
    control = el("select", common, ...options);
  } else if (kind === "boolean") {
    control = el("input", { ...common, type: "checkbox", required: undefined });
  } else if (kind === "number") {
    control = numberField(common, type);
  } else if (kind === "string") {
    const long = name.includes("prompt") || (type.maxLength ?? 0) > 200;
    control = long
      ? el("textarea", { ...common, rows: 3, maxlength: type.maxLength })
      : el("input", { ...common, type: "text", maxlength: type.maxLength });
  } else {
    control = el("textarea", { ...common, rows: 3, spellcheck: "false", class: "json", placeholder: "JSON" });
  }

  const title = schema.title || type.title || name;
  const hints = [schema.description || type.description || "", rangeHint(type)].filter(Boolean).join(" ");
  const label = el(
    "label",
    { for: id },
    title,
    required ? el("span", { class: "required", title: "required" }, " *", hiddenText(" (required)")) : null,
    " ",
    el("code", { class: "field-name" }, name),
  );
  const error = el("div", { class: "field-error", id: `error-${name}`, "data-testid": `error-${name}`, hidden: true });
  const wrapper = el(
    "div",
    { class: `field field-${kind}`, dataset: { field: name } },
    kind === "boolean" ? el("div", { class: "check" }, control, label) : [label, control],
    el("small", { id: descriptionId, class: "muted" }, hints),
    error,
  );

  const input = widget ? widget.focusable : control;
  const field = {
    name,
    kind,
    wrapper,
    input,
    set(value) {
      if (widget) return widget.set(value);
      if (kind === "boolean") control.checked = Boolean(value);
      else if (kind === "enum") control.value = value === undefined || value === null ? "" : JSON.stringify(value);
      else if (value === undefined || value === null) control.value = "";
      else control.value = kind === "json" ? JSON.stringify(value, null, 2) : value;
      control.dispatchEvent(new Event("input"));
    },
    // The value to send, or undefined to leave the field out (the server applies its default).
    async get() {
      if (widget) return (await widget.value()) || undefined;
      if (kind === "boolean") return control.checked;
      if (control.value === "") return undefined;
      if (kind === "enum") return JSON.parse(control.value);
      if (kind === "number") return control.valueAsNumber;
      if (kind === "json") return JSON.parse(control.value);
      return control.value;
    },
    setError(message) {
      error.textContent = message || "";
      error.hidden = !message;
      input.setAttribute("aria-invalid", message ? "true" : "false");
    },
  };
  if (kind === "json") {
    control.addEventListener("input", () => {
      try {
        if (control.value.trim()) JSON.parse(control.value);
        control.setCustomValidity("");
      } catch {
        control.setCustomValidity("Not valid JSON.");
      }
    });
  }
  field.defaultValue = schema.default;
  return field;
}

export function buildForm(container, inputSchema) {
  const properties = inputSchema.properties || {};
  const order = inputSchema["x-fal-order-properties"] || Object.keys(properties);
  const required = new Set(inputSchema.required || []);
  const fields = order
    .filter((name) => properties[name])
    .map((name) => buildField(name, properties[name], required.has(name)));
  container.replaceChildren(...fields.map((field) => field.wrapper));

  function reset() {
    for (const field of fields) field.set(field.defaultValue);
  }
  reset();

  return {
    fields,
    reset,
    async values() {
      const values = {};
      for (const field of fields) {
        const value = await field.get();
        if (value !== undefined) values[field.name] = value;
      }
      return values;
    },
    // Fill the form from an earlier request; a shortened data URI from the history cannot be sent again.
    load(input) {
      for (const field of fields) {
        if (!(field.name in input)) continue;
        const value = input[field.name];
        if (typeof value === "string" && value.startsWith("data:") && value.includes("…")) continue;
        field.set(value);
      }
    },
    clearErrors() {
      for (const field of fields) field.setError("");
    },
    // A 422 names every bad field: show each message under its field. Returns whether any was shown.
    showErrors(messages) {
      let shown = false;
      for (const field of fields) {
        if (messages[field.name]) {
          field.setError(messages[field.name]);
          shown = true;
        }
      }
      return shown;
    },
  };
}
