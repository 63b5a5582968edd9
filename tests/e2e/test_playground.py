"""The playground in a real browser: Debian's Chromium driven by Playwright against `framecast serve --models tiny`.

A user's path through it: the endpoints and their readiness, the key, a form generated from the schema, an
image from the file picker, the live progress, the video playing, a cancel, the history, and the code shown
under a request run as it is. Screenshots of each stage go to .test-artifacts/playground/ (kept by CI).

The held job (for the cancel) is submitted from the page itself: its Advanced section takes extra request
headers, as fal's clients take a `headers` option, so the test-only `X-Framecast-Test-Fault` header goes
through the same form and the same Cancel button a user has.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.server import FramecastServer, wait_for
from tests.e2e.test_js_client import exercise_script  # noqa: F401  (the fixture: tests/js with @fal-ai/client)

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    pytest.fail("playwright is needed for the browser tests (pip install -e '.[test]')", pytrace=False)

CHROMIUM = Path("/usr/bin/chromium")
# Headless on a machine without a display, a GPU or a network; no sandbox as root in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / ".test-artifacts" / "playground"
JOB_TIMEOUT_MS = 90_000
SNIPPET_TIMEOUT_S = 120
HELD_AT_STEP = 30  # FramePack: 25 steps a section, so the first section's preview exists when it holds.

# Records, from before the page's own scripts run, what the page showed over time: the progress steps, the
# statuses, the number of log lines and the preview videos. The test reads it after the job, so it never has
# to catch a fast job mid-flight with a sleep.
OBSERVER = """
window.__seen = { steps: [], statuses: [], logCounts: [], previews: [] };
new MutationObserver((mutations) => {
  for (const m of mutations) {
    const node = m.target;
    if (m.type === "attributes" && m.attributeName === "data-step") window.__seen.steps.push(Number(node.dataset.step));
    if (m.type === "attributes" && m.attributeName === "data-status") window.__seen.statuses.push(node.dataset.status);
    if (m.type === "attributes" && m.attributeName === "src" && node.dataset.testid === "preview-video"
        && node.getAttribute("src")) window.__seen.previews.push(node.getAttribute("src"));
    if (m.type === "childList" && node.dataset && node.dataset.testid === "logs") {
      window.__seen.logCounts.push(node.children.length);
    }
  }
}).observe(document, { subtree: true, childList: true, attributes: true,
                        attributeFilter: ["data-step", "data-status", "src"] });
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (Debian's chromium)", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # Debian's Chromium, never one downloaded by Playwright.
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def context(browser: Browser, server: FramecastServer) -> Iterator[BrowserContext]:
    # The test CA is not in Chromium's store; everything else about TLS is real.
    instance = browser.new_context(
        base_url=server.url, ignore_https_errors=True, viewport={"width": 1280, "height": 900}
    )
    instance.add_init_script(OBSERVER)
    yield instance
    instance.close()


@pytest.fixture
def page(context: BrowserContext, server: FramecastServer) -> Page:
    """A page whose browser holds the server's key, set once through the key form as a user does."""
    opened = context.new_page()
    opened.goto("/")
    set_key(opened, server)
    return opened


@pytest.fixture(scope="module")
def image_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("playground") / "input.png"
    Image.new("RGB", (96, 64), (30, 120, 200)).save(path)
    return path


def shot(page: Page, name: str) -> None:
    """The whole page. Chromium's full_page capture leaves the layout off by a few pixels until the next input,
    enough for the next click to miss its button; a real resize to the page's height and back does not."""
    size = page.viewport_size
    assert size is not None
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size(size)


def set_key(page: Page, server: FramecastServer) -> None:
    assert server.api_key is not None
    page.fill("#api-key", server.api_key)
    page.click("[data-testid=save-key]")
    key_id = server.api_key.split(":")[0]
    page.wait_for_selector(f"[data-testid=api-key-state]:has-text('Using {key_id}')")


def open_endpoint(page: Page, endpoint_id: str) -> None:
    page.goto(f"/playground/{endpoint_id}")
    page.wait_for_selector("body[data-ready=true]")
    assert not page.is_visible("#page-error"), page.inner_text("#page-error")


def upload(page: Page, field: str, image: Path) -> str:
    """Choose the file with the picker; returns the uploaded file's URL that the form will submit."""
    page.set_input_files(f"#file-{field}", str(image))
    page.wait_for_selector(f"[data-testid=drop-{field}][data-uploaded=true]")
    thumbnail = page.locator(f"[data-testid=thumb-{field}]")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    return page.input_value(f"#field-{field}")


def wait_finished(page: Page, request: str = "[data-testid=request]") -> dict[str, str]:
    page.wait_for_selector(f"{request}[data-finished=true]", timeout=JOB_TIMEOUT_MS)
    attributes: dict[str, str] = page.eval_on_selector(request, "(node) => ({...node.dataset})")
    return attributes


def assert_plays(page: Page, testid: str) -> None:
    """The video decodes and plays: its currentTime moves on (it autoplays muted, as a browser allows)."""
    video = page.locator(f"[data-testid={testid}]").element_handle()
    # Chrome starts a muted autoplaying video only while it is on screen, as a user would be looking at it.
    video.scroll_into_view_if_needed()
    page.wait_for_function("(v) => v.readyState >= 2 && !v.paused && v.videoWidth > 0 && v.currentTime > 0", arg=video)
    start = page.evaluate("(v) => v.currentTime", video)
    page.wait_for_function("([v, start]) => v.currentTime !== start", arg=[video, start])
    decoded = page.evaluate("(v) => v.getVideoPlaybackQuality().totalVideoFrames", video)
    assert decoded > 0


def seen(page: Page) -> dict[str, Any]:
    observed: dict[str, Any] = page.evaluate("() => window.__seen")
    return observed


def png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 40), (200, 80, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_home_lists_every_endpoint_with_its_readiness(context: BrowserContext, server: FramecastServer) -> None:
    with server.client() as client:
        catalogue = client.get("/models").json()["endpoints"]
    page = context.new_page()
    page.goto("/")
    page.wait_for_selector("[data-testid=endpoint-row]")
    rows = page.eval_on_selector_all(
        "[data-testid=endpoint-row]", "(rows) => rows.map((row) => [row.dataset.endpointId, row.dataset.state])"
    )
    assert rows == [[entry["endpoint_id"], entry["state"]] for entry in catalogue]
    framepack = page.locator("[data-testid=endpoint-row][data-endpoint-id='fal-ai/framepack']")
    assert framepack.locator("[data-testid=endpoint-state]").inner_text() == "ready"
    assert "diffusers-framepack" in framepack.inner_text()
    assert framepack.locator("[data-testid=endpoint-link]").get_attribute("href") == "/playground/fal-ai/framepack"
    # Without a key the history says what to do; with it, it loads.
    page.wait_for_selector("[data-testid=history-message]:has-text('Set your API key')")
    shot(page, "01-home-no-key")
    set_key(page, server)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=history-message]').textContent.includes('API key')"
    )
    assert server.api_key is not None
    assert server.api_key not in page.content(), "the secret is never written into the page"
    shot(page, "02-home")
    missing = page.goto("/playground/fal-ai/no-such-model")
    assert missing is not None and missing.status == 404


def test_every_endpoint_page_builds_its_form_from_the_schema(page: Page, server: FramecastServer) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with server.client() as client:
        endpoint_ids = [entry["endpoint_id"] for entry in client.get("/models").json()["endpoints"]]
        for endpoint_id in endpoint_ids:
            document = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": endpoint_id}).json()
            schema = next(body for name, body in document["components"]["schemas"].items() if name.endswith("Input"))
            open_endpoint(page, endpoint_id)
            fields = page.eval_on_selector_all("[data-field]", "(nodes) => nodes.map((node) => node.dataset.field)")
            assert fields == schema["x-fal-order-properties"], endpoint_id
            required = page.eval_on_selector_all(
                "[data-field]:has(.required)", "(nodes) => nodes.map((node) => node.dataset.field)"
            )
            assert sorted(required) == sorted(schema.get("required", [])), endpoint_id
            for name in fields:
                if name == "image" or name.endswith(("image_url", "mask_url")):
                    assert page.locator(f"#file-{name}").count() == 1, (endpoint_id, name)
    assert errors == []


def test_form_upload_submit_progress_and_video(page: Page, server: FramecastServer, image_png: Path) -> None:
    open_endpoint(page, "fal-ai/framepack")
    # The form follows the schema: defaults, enums as selects, ranges, descriptions, required fields.
    assert page.input_value("#field-num_frames") == "180"
    assert page.get_attribute("#field-num_frames", "min") == "1"
    assert page.get_attribute("#field-num_frames", "max") == "1800"
    assert page.eval_on_selector("#field-resolution", "(s) => s.tagName") == "SELECT"
    options = page.eval_on_selector_all("#field-resolution option", "(os) => os.map((o) => o.textContent)")
    assert options == ["720p", "480p"]
    assert page.eval_on_selector("#field-resolution", "(s) => s.selectedOptions[0].textContent") == "720p"
    assert page.is_checked("#field-enable_safety_checker")
    assert "Text prompt for video generation" in page.inner_text("#desc-prompt")
    assert "(required)" in page.inner_text("label[for=field-prompt]")
    assert "(required)" in page.inner_text("label[for=field-image_url]")
    assert "(required)" not in page.inner_text("label[for=field-seed]")

    page.fill("#field-prompt", "a blue square drifting")
    # The browser enforces the schema's range: nothing is submitted.
    page.fill("#field-image_url", f"{server.url}/files/uploads/{'0' * 32}/gone.png")
    page.fill("#field-num_frames", "5000")
    page.click("[data-testid=submit]")
    assert page.eval_on_selector("#field-num_frames", "(i) => i.validity.rangeOverflow")
    page.fill("#field-num_frames", "100")
    # The server's 422 is shown in words, under the field it names.
    page.click("[data-testid=submit]")
    page.wait_for_selector("[data-testid=error-image_url]:not([hidden])")
    assert "no such file on this server" in page.inner_text("[data-testid=error-image_url]")
    assert "image_url: no such file" in page.inner_text("[data-testid=form-error]")
    assert page.locator("[data-testid=request]").count() == 0
    shot(page, "03-form-error")

    image_url = upload(page, "image_url", image_png)
    assert image_url.startswith(f"{server.url}/files/uploads/")
    page.select_option("#field-resolution", label="480p")
    page.fill("#field-seed", "7")
    shot(page, "04-form-filled")

    page.click("[data-testid=submit]")
    page.wait_for_selector("[data-testid=request][data-step]")
    shot(page, "05-progress")
    attributes = wait_finished(page)
    assert attributes["outcome"] == "done", page.inner_text("[data-testid=request]")
    assert page.url.endswith(f"?request={attributes['requestId']}")

    # It showed the run as it went: the step moving, logs arriving, a preview per finished section.
    observed = seen(page)
    total = page.eval_on_selector("[data-testid=progress-bar]", "(bar) => bar.max")
    middle = {step for step in observed["steps"] if 0 < step < total}
    assert len(middle) >= 2, observed
    assert observed["steps"] == sorted(observed["steps"]), observed
    assert len(set(observed["logCounts"])) >= 3, observed
    assert observed["previews"], "a FramePack section preview was shown"
    assert all(url.startswith(f"{server.url}/files/outputs/") for url in observed["previews"])
    assert "IN_PROGRESS" in observed["statuses"]
    logs = page.inner_text("[data-testid=logs]")
    assert re.search(r"Step \d+/\d+, ETA", logs) and "Section 1/" in logs and "Done:" in logs
    assert page.inner_text("[data-testid=progress-text]").startswith("Done")

    assert_plays(page, "result-video")
    result = json.loads(page.inner_text("[data-testid=result-json]"))
    assert page.get_attribute("[data-testid=result-video]", "src") == result["video"]["url"]
    assert result["seed"] == 7
    submitted = json.loads(page.text_content("[data-testid=input-json]") or "")
    assert submitted["image_url"] == image_url and submitted["num_frames"] == 100 and submitted["resolution"] == "480p"
    with page.expect_download() as download_info:
        page.click("[data-testid=download]")
    download = download_info.value
    assert download.suggested_filename == result["video"]["file_name"]
    downloaded = Path(download.path()).read_bytes()
    assert downloaded[4:8] == b"ftyp" and len(downloaded) == result["video"]["file_size"]
    shot(page, "06-done")


def test_cancel_a_running_job_and_a_queued_one(
    context: BrowserContext, page: Page, server: FramecastServer, image_png: Path
) -> None:
    open_endpoint(page, "fal-ai/framepack")
    upload(page, "image_url", image_png)
    page.fill("#field-prompt", "held")
    page.fill("#field-num_frames", "40")
    page.select_option("#field-resolution", label="480p")
    page.click("[data-testid=advanced] summary")
    page.fill("[data-testid=extra-headers]", f"X-Framecast-Test-Fault: block_at_step={HELD_AT_STEP}")
    page.click("[data-testid=submit]")
    page.wait_for_selector("[data-testid=request][data-request-id]")
    held_id = page.get_attribute("[data-testid=request]", "data-request-id")
    try:
        page.wait_for_selector("[data-testid=log-line]:has-text('Test fault: holding')", timeout=JOB_TIMEOUT_MS)
        page.wait_for_selector("[data-testid=preview]:not([hidden])")
        assert page.get_attribute("[data-testid=request]", "data-outcome") == "running"
        assert "section 1/2" in page.inner_text("[data-testid=preview-caption]")
        assert_plays(page, "preview-video")
        shot(page, "07-running-held")

        # A second request, in another tab, waits behind the held one: its queue position shows.
        queued = context.new_page()
        open_endpoint(queued, "fal-ai/wan-i2v")
        upload(queued, "image_url", image_png)
        queued.fill("#field-prompt", "waits")
        queued.fill("#field-num_inference_steps", "2")
        queued.click("[data-testid=submit]")
        queued.wait_for_selector("[data-testid=request][data-status=IN_QUEUE]")
        assert queued.inner_text("[data-testid=queue-position]") == "Queued: next to run"
        shot(queued, "08-queued")
        queued.click("[data-testid=cancel]")
        assert wait_finished(queued)["outcome"] == "cancelled"
        assert "cancelled" in queued.inner_text("[data-testid=request-error]")
        shot(queued, "09-queued-cancelled")

        page.click("[data-testid=cancel]")
        assert wait_finished(page)["outcome"] == "cancelled"
    finally:
        with server.client() as client:
            client.put(f"/queue/fal-ai/framepack/requests/{held_id}/cancel")
    assert page.inner_text("[data-testid=progress-text]") == "Cancelled"
    assert "cancelled by the client" in page.inner_text("[data-testid=request-error]")
    assert not page.is_visible("[data-testid=cancel]")
    # FramePack keeps the finished sections: the partial output is the player's video.
    result = json.loads(page.inner_text("[data-testid=result-json]"))
    assert page.get_attribute("[data-testid=result-video]", "src") == result["partial_output"]["video"]["url"]
    assert "Partial output" in page.inner_text("[data-testid=result-caption]")
    shot(page, "10-running-cancelled")


def test_history_lists_requests_and_reopens_one(page: Page, server: FramecastServer) -> None:
    # Made by another client with the same key: the history is the server's, not this browser's.
    arguments = {"prompt": "from the API", "image_url": png_data_uri(), "resolution": "480p", "num_inference_steps": 2}
    with server.client() as client:
        submitted = client.post("/queue/fal-ai/wan-i2v", json=arguments).json()
        wait_for(
            lambda: client.get(submitted["status_url"]).json()["status"] == "COMPLETED",
            timeout_s=JOB_TIMEOUT_MS / 1000,
            what="the API request to finish",
        )
    request_id = submitted["request_id"]
    page.reload()
    row = page.locator(f"[data-testid=history-row][data-request-id='{request_id}']")
    row.wait_for()
    assert row.get_attribute("data-outcome") == "done"
    assert page.locator("[data-testid=history-row]").first.get_attribute("data-request-id") == request_id
    shot(page, "11-history")

    row.locator("[data-testid=history-open]").click()
    page.wait_for_url(f"**/playground/fal-ai/wan-i2v?request={request_id}")
    attributes = wait_finished(page)
    assert attributes["requestId"] == request_id and attributes["outcome"] == "done"
    assert_plays(page, "result-video")
    shown_input = json.loads(page.text_content("[data-testid=input-json]") or "")
    assert shown_input["prompt"] == "from the API"
    assert shown_input["image_url"].startswith("data:image/png;base64,") and "…" in shown_input["image_url"]
    result = json.loads(page.text_content("[data-testid=result-json]") or "")
    assert page.get_attribute("[data-testid=download]", "href") == result["video"]["url"]
    # The shortened data URI is never put into code as if it were the image.
    assert "<a data URI or URL of your file>" in (page.text_content("[data-testid=code-python-1]") or "")
    # "Edit and run again" puts the request's input back into the form.
    page.click("[data-testid=load-input]")
    assert page.input_value("#field-prompt") == "from the API"
    assert page.input_value("#field-num_inference_steps") == "2"
    shot(page, "12-history-reopened")


def test_code_under_a_request_reproduces_it(
    page: Page,
    server: FramecastServer,
    image_png: Path,
    exercise_script: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Each client's code, copied from the page and run as shown, makes the same request again."""
    open_endpoint(page, "fal-ai/wan-i2v")
    upload(page, "image_url", image_png)
    page.fill("#field-prompt", "reproduce me")
    page.fill("#field-num_inference_steps", "2")
    page.select_option("#field-resolution", label="480p")
    page.fill("#field-seed", "11")
    page.click("[data-testid=submit]")
    assert wait_finished(page)["outcome"] == "done"
    for tab in ("javascript", "curl", "python"):
        page.click(f"[data-testid=tab-{tab}]")
        assert page.is_visible(f"[data-testid=code-{tab}]")
    shot(page, "13-code")
    code = {
        name: page.text_content(f"[data-testid={name}]") or ""
        for name in ("code-python-0", "code-python-1", "code-javascript-0", "code-javascript-1", "code-curl-0")
    }
    assert server.api_key is not None and all(server.api_key not in text for text in code.values())
    key, ca = server.api_key, str(server.ca_path)

    def run(arguments: list[str], *, environment: dict[str, str], cwd: Path = tmp_path) -> str:
        completed = subprocess.run(
            arguments, cwd=cwd, env={**os.environ, **environment}, capture_output=True, text=True,
            timeout=SNIPPET_TIMEOUT_S,
        )  # fmt: skip
        assert completed.returncode == 0, f"{arguments}:\n{completed.stdout}\n{completed.stderr}"
        return completed.stdout

    def with_key(shell: str) -> str:
        return shell.replace("<your key>", key)

    def exports(shell: str) -> dict[str, str]:
        return dict(re.findall(r"^export (\w+)=(\S+)", with_key(shell).replace('"', ""), flags=re.MULTILINE))

    # Python: the shell lines as shown (plus the private CA, as their comment says), then the script.
    script = tmp_path / "reproduce.py"
    script.write_text(code["code-python-1"])
    shell = f"{with_key(code['code-python-0'])}\nexport SSL_CERT_FILE={ca}\nexec {sys.executable} {script}\n"
    python_result = run(["bash", "-c", shell], environment={})
    assert "'video'" in python_result and "'seed': 11" in python_result

    # JavaScript: the exports (not `npm install`: tests/js has the pinned client), then the module.
    module = tmp_path / "run.mjs"
    module.write_text(code["code-javascript-1"])
    (tmp_path / "node_modules").symlink_to(exercise_script.parent / "node_modules")
    javascript_env = {**exports(code["code-javascript-0"]), "NODE_EXTRA_CA_CERTS": ca}
    javascript_result = run(["node", str(module)], environment=javascript_env)
    assert '"seed": 11' in javascript_result and '"video"' in javascript_result

    # curl: the whole block, with curl trusting the CA through its environment.
    curl_result = run(["bash", "-c", with_key(code["code-curl-0"])], environment={"CURL_CA_BUNDLE": ca})
    final = json.loads(curl_result.strip().splitlines()[-1])
    assert final["seed"] == 11 and final["video"]["content_type"] == "video/mp4"
    assert "data: " in curl_result and '"COMPLETED"' in curl_result

    with server.client() as client:
        history = client.get("/api/requests", params={"limit": 4}).json()["requests"]
    reproduced = [entry for entry in history[:3] if entry["input"].get("prompt") == "reproduce me"]
    assert len(reproduced) == 3 and all(entry["status"] == "COMPLETED" for entry in reproduced)
