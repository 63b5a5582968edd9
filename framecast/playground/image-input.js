// An image input: a URL (http(s) or data:), or a file from the picker or dropped here. Files are uploaded
// at once (`/storage/upload/initiate` + PUT) and the form submits their URL, as @fal-ai/client does.

import { uploadFile } from "./api.js";
import { el } from "./dom.js";

export function imageInput(name, { required, describedBy }) {
  const url = el("input", {
    id: `field-${name}`,
    name,
    type: "url",
    "data-testid": `field-${name}`,
    placeholder: "https://… or choose a file",
    required,
    "aria-describedby": describedBy,
  });
  const fileId = `file-${name}`;
  // Visually hidden, not display:none: it stays focusable, and its label is the visible "Choose file" button.
  const file = el("input", {
    id: fileId,
    type: "file",
    accept: "image/*",
    "data-testid": `file-${name}`,
    class: "visually-hidden",
  });
  const thumb = el("img", { class: "thumb", alt: `Preview of ${name}`, "data-testid": `thumb-${name}`, hidden: true });
  const status = el("span", { class: "muted", "data-testid": `upload-status-${name}`, "aria-live": "polite" });
  const zone = el(
    "div",
    { class: "dropzone", "data-testid": `drop-${name}` },
    thumb,
    el("div", {}, el("label", { for: fileId, class: "button secondary" }, "Choose file"), " or drop an image here"),
    status,
  );
  let pending = null;
  let objectUrl = null;

  function showThumb(source) {
    if (objectUrl && objectUrl !== source) URL.revokeObjectURL(objectUrl);
    objectUrl = source?.startsWith("blob:") ? source : null;
    thumb.hidden = !source;
    if (source) thumb.src = source;
    else thumb.removeAttribute("src");
  }

  async function upload(chosen) {
    if (!chosen.type.startsWith("image/")) {
      status.textContent = `${chosen.name} is not an image`;
      return;
    }
    showThumb(URL.createObjectURL(chosen));
    status.textContent = `Uploading ${chosen.name}…`;
    url.value = "";
    // Submit waits on this, so a Run clicked mid-upload still sends the uploaded file's URL.
    pending = uploadFile(chosen)
      .then((fileUrl) => {
        url.value = fileUrl;
        status.textContent = `Uploaded ${chosen.name}`;
        zone.dataset.uploaded = "true";
      })
      .catch((error) => {
        status.textContent = `Upload failed: ${error.message}`;
        throw error;
      })
      .finally(() => (pending = null));
    return pending.catch(() => {});
  }

  file.addEventListener("change", () => file.files[0] && upload(file.files[0]));
  url.addEventListener("change", () => {
    delete zone.dataset.uploaded;
    status.textContent = "";
    showThumb(url.value.trim() || null);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const dropped = event.dataTransfer.files[0];
    if (dropped) return upload(dropped);
    // An image dragged from another page comes as a URL.
    const link = event.dataTransfer.getData("text/uri-list").split("\n")[0] || event.dataTransfer.getData("text/plain");
    if (link) {
      url.value = link.trim();
      url.dispatchEvent(new Event("change"));
    }
  });
  thumb.addEventListener("error", () => {
    if (!thumb.hidden) status.textContent = "Cannot show this image here; the server may still fetch it.";
  });

  return {
    element: el("div", { class: "image-input" }, url, file, zone),
    focusable: url,
    async value() {
      if (pending) await pending;
      return url.value.trim();
    },
    set(value) {
      url.value = value ?? "";
      url.dispatchEvent(new Event("change"));
    },
  };
}
