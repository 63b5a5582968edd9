"""`framecast run` without a server: arguments, URL mapping, image fields, the progress display."""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from framecast import cli_run
from framecast.cli import build_parser, main
from framecast.cli_run import (
    Display,
    UsageError,
    api_key,
    app_path,
    choose_image_fields,
    format_duration,
    format_log,
    format_progress,
    image_value,
    input_properties,
    parse_header,
    parse_param,
    queue_base_url,
    schema_url,
    status_line,
)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_run_arguments_parse_with_defaults() -> None:
    arguments = parse("fal-ai/wan-i2v", "--image", "cat.png", "--out", "v.mp4")
    assert arguments.command == "run"
    assert (arguments.endpoint, arguments.image, arguments.out) == ("fal-ai/wan-i2v", "cat.png", Path("v.mp4"))
    assert (arguments.end_image, arguments.prompt, arguments.server, arguments.key) == (None, None, None, None)
    assert (arguments.param, arguments.header, arguments.logs, arguments.json) == ([], [], False, False)


def test_run_arguments_repeat_params_and_headers() -> None:
    arguments = parse(
        "fal-ai/wan-flf2v", "--image", "a.png", "--end-image", "https://x/b.png", "--prompt", "a cat",
        "--param", "num_inference_steps=2", "--param", "resolution=480p", "--out", "v.mp4",
        "--header", "X-Fal-Queue-Priority: low", "--header", "X-Framecast-Test-Fault:block_at_step=1",
        "--server", "https://gpu1:8000", "--key", "k", "--logs", "--json",
    )  # fmt: skip
    assert arguments.param == [("num_inference_steps", 2), ("resolution", "480p")]
    assert arguments.header == [("X-Fal-Queue-Priority", "low"), ("X-Framecast-Test-Fault", "block_at_step=1")]
    assert (arguments.end_image, arguments.prompt, arguments.logs, arguments.json) == (
        "https://x/b.png",
        "a cat",
        True,
        True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["fal-ai/wan-i2v", "--out", "v.mp4"],  # no --image
        ["fal-ai/wan-i2v", "--image", "a.png"],  # no --out
        ["fal-ai/wan-i2v", "--image", "a.png", "--out", "v.mp4", "--param", "novalue"],
        ["fal-ai/wan-i2v", "--image", "a.png", "--out", "v.mp4", "--header", "nocolon"],
    ],
)
def test_bad_run_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", *argv])
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_run_help_explains_server_images_and_params() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "framecast", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for text in ("--server", "/queue", "queue.fal.run", "FAL_KEY", "FRAMECAST_API_KEY", "SSL_CERT_FILE",
                 "image_url", "end_image_url", "tail_image_url", "data: URI", "--param", "Ctrl-C", "130"):  # fmt: skip
        assert text in output, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("num_inference_steps=2", ("num_inference_steps", 2)),
        ("guidance_scale=3.5", ("guidance_scale", 3.5)),
        ("enable_safety_checker=false", ("enable_safety_checker", False)),
        ("seed=null", ("seed", None)),
        ("resolution=480p", ("resolution", "480p")),
        ("negative_prompt=blurry, low quality", ("negative_prompt", "blurry, low quality")),
        ('seed_text="42"', ("seed_text", "42")),
        ("loras=[1, 2]", ("loras", [1, 2])),
        ("prompt=a=b", ("prompt", "a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_param_values_are_json_when_they_parse(text: str, expected: tuple[str, Any]) -> None:
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=1", " =1"])
def test_bad_params_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_param(text)


def test_headers_split_at_the_first_colon() -> None:
    assert parse_header("X-Framecast-Test-Fault: block_at_step=1") == ("X-Framecast-Test-Fault", "block_at_step=1")
    assert parse_header("X-Url:https://a:1/b") == ("X-Url", "https://a:1/b")


@pytest.mark.parametrize(
    ("server", "environ", "expected"),
    [
        ("https://gpu1:8000", {}, "https://gpu1:8000/queue"),
        ("https://gpu1:8000/", {}, "https://gpu1:8000/queue"),
        ("http://localhost:8000", {}, "http://localhost:8000/queue"),
        ("gpu1.example.com:8000", {}, "https://gpu1.example.com:8000/queue"),
        ("https://gpu1:8000/queue", {}, "https://gpu1:8000/queue"),
        ("https://proxy.example.com/framecast", {}, "https://proxy.example.com/framecast/queue"),
        ("https://queue.fal.run", {}, "https://queue.fal.run"),
        ("https://queue.fal.run/", {}, "https://queue.fal.run"),
        ("https://fal.run", {}, "https://queue.fal.run"),
        ("https://gpu1:8000", {"FAL_QUEUE_RUN_HOST": "other:1/queue"}, "https://gpu1:8000/queue"),
        (None, {"FRAMECAST_SERVER": "https://gpu2:8000", "FAL_QUEUE_RUN_HOST": "x"}, "https://gpu2:8000/queue"),
        (None, {"FAL_QUEUE_RUN_HOST": "localhost:8445/queue"}, "https://localhost:8445/queue"),
        (None, {"FAL_QUEUE_RUN_HOST": "queue.fal.run"}, "https://queue.fal.run"),
        (None, {}, "https://queue.fal.run"),
    ],
)
def test_server_maps_to_the_queue_base(server: str | None, environ: dict[str, str], expected: str) -> None:
    assert queue_base_url(server, environ) == expected


def test_the_key_comes_from_the_flag_then_the_environment() -> None:
    assert api_key("flag", {"FAL_KEY": "fal"}) == "flag"
    assert api_key(None, {"FAL_KEY": "fal", "FRAMECAST_API_KEY": "fc"}) == "fal"
    assert api_key(None, {"FRAMECAST_API_KEY": "fc"}) == "fc"
    assert api_key(None, {"FAL_KEY_ID": "id", "FAL_KEY_SECRET": "secret"}) == "id:secret"
    assert api_key(None, {}) is None


def test_status_urls_use_owner_and_alias_only() -> None:
    assert app_path("fal-ai/kling-video/v2.1/pro/image-to-video") == "fal-ai/kling-video"
    assert app_path("fal-ai/wan-i2v") == "fal-ai/wan-i2v"
    assert app_path("workflows/me/flow/run") == "workflows/me/flow"


def test_schema_url_is_the_servers_or_fal_ais() -> None:
    assert (
        schema_url("https://gpu1:8000/queue", "fal-ai/wan-i2v")
        == "https://gpu1:8000/api/openapi/queue/openapi.json?endpoint_id=fal-ai/wan-i2v"
    )
    assert schema_url("https://queue.fal.run", "fal-ai/framepack/f1").startswith(
        "https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=fal-ai/framepack/f1"
    )


def openapi(endpoint_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A fal-layout queue OpenAPI document, trimmed to what the CLI reads."""
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Input"}}}}
    return {
        "paths": {f"/{endpoint_id}": {"post": {"requestBody": body}}},
        "components": {"schemas": {"Input": {"properties": properties}}},
    }


def test_input_properties_come_from_the_submit_route() -> None:
    properties: dict[str, Any] = {"prompt": {}, "image_url": {}}
    assert input_properties(openapi("fal-ai/wan-i2v", properties), "fal-ai/wan-i2v") == properties
    assert input_properties(openapi("fal-ai/wan-i2v", properties), "fal-ai/other") is None
    assert input_properties({"paths": []}, "fal-ai/wan-i2v") is None


def test_input_properties_from_the_real_document() -> None:
    from framecast.api.openapi import endpoint_document
    from framecast.endpoints import build_catalogue

    spec = build_catalogue()["fal-ai/wan-flf2v"]
    document = json.loads(json.dumps(endpoint_document(spec, queue_url="https://x/queue", version="0")))
    properties = input_properties(document, "fal-ai/wan-flf2v")
    assert properties is not None
    assert choose_image_fields(properties, want_end=True) == ("start_image_url", "end_image_url")


@pytest.mark.parametrize(
    ("names", "want_end", "expected"),
    [
        (["prompt", "image_url"], False, ("image_url", None)),
        (["prompt", "start_image_url", "end_image_url"], True, ("start_image_url", "end_image_url")),
        (["image", "prompt"], False, ("image", None)),
        (["image_url", "tail_image_url", "static_mask_url"], True, ("image_url", "tail_image_url")),
        (["first_image_url", "last_image_url", "end_image_url"], True, ("first_image_url", "end_image_url")),
        (["first_image_url", "last_image_url"], True, ("first_image_url", "last_image_url")),
    ],
)
def test_image_fields_come_from_the_schema(names: list[str], want_end: bool, expected: tuple[str, str | None]) -> None:
    assert choose_image_fields({key: {} for key in names}, want_end=want_end) == expected


def test_image_fields_without_a_schema_are_the_usual_names() -> None:
    assert choose_image_fields(None, want_end=False) == ("image_url", None)
    assert choose_image_fields(None, want_end=True) == ("image_url", "end_image_url")


def test_an_end_image_for_an_endpoint_without_one_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"no end image.*image_url"):
        choose_image_fields({"prompt": {}, "image_url": {}}, want_end=True)
    with pytest.raises(UsageError, match="--image-field"):
        choose_image_fields({"prompt": {}, "picture": {}}, want_end=False)


def test_a_local_image_becomes_a_data_uri(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    path = tmp_path / "frame.bin"  # the type is sniffed, not guessed from the name
    path.write_bytes(buffer.getvalue())
    uri = image_value(str(path))
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == buffer.getvalue()
    for url in ("https://example.com/a.png", "http://x/y", "data:image/png;base64,AAAA"):
        assert image_value(url) == url
    with pytest.raises(UsageError, match="no such image file"):
        image_value(str(tmp_path / "missing.png"))


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "--:--"), (0, "0:00"), (9.6, "0:10"), (42, "0:42"), (3725, "1:02:05"), (-3, "0:00")],
)
def test_durations(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


def test_the_progress_bar_shows_steps_percent_and_eta() -> None:
    line = format_progress({"step": 5, "total_steps": 20, "eta_s": 42.4, "fraction": 0.25}, width=20)
    assert line == "[#####---------------] 5/20 steps  25%  ETA 0:42"
    assert format_progress({"step": 2, "total_steps": 2, "eta_s": 0}, width=4) == "[####] 2/2 steps 100%  ETA 0:00"
    # The ETA counts down between status updates, never below zero.
    assert format_progress({"step": 1, "total_steps": 4, "eta_s": 30}, since_s=10, width=4).endswith("ETA 0:20")
    assert format_progress({"step": 1, "total_steps": 4, "eta_s": 3}, since_s=10, width=4).endswith("ETA 0:00")
    assert format_progress({"step": 1, "total_steps": 4}, width=4).endswith("ETA --:--")


def test_status_lines() -> None:
    assert status_line({"status": "IN_QUEUE", "queue_position": 3}) == "In queue: 3 ahead"
    assert status_line({"status": "IN_PROGRESS", "logs": None}, elapsed_s=65) == "In progress, 1:05 elapsed"
    progress = {"step": 1, "total_steps": 2, "eta_s": 1}
    assert status_line({"status": "IN_PROGRESS", "progress": progress}).startswith("In progress [")


def test_log_lines() -> None:
    entry = {"message": "Step 1/2, ETA 0.1s", "level": "INFO", "source": "USER", "timestamp": "2025-01-01T12:00:01Z"}
    assert format_log(entry) == "12:00:01 INFO  Step 1/2, ETA 0.1s"


def statuses() -> list[dict[str, Any]]:
    log = {"message": "Loading", "level": "INFO", "source": "USER", "timestamp": "2025-01-01T12:00:00Z"}
    step = {"message": "Step 1/2", "level": "INFO", "source": "USER", "timestamp": "2025-01-01T12:00:01Z"}
    return [
        {"status": "IN_QUEUE", "queue_position": 1},
        {"status": "IN_QUEUE", "queue_position": 1},
        {"status": "IN_QUEUE", "queue_position": 0},
        {"status": "IN_PROGRESS", "logs": [log]},
        {"status": "IN_PROGRESS", "logs": [log, step], "progress": {"step": 1, "total_steps": 2, "eta_s": 1}},
        {"status": "IN_PROGRESS", "logs": [log, step], "progress": {"step": 1, "total_steps": 2, "eta_s": 1}},
        {"status": "COMPLETED", "logs": [log, step], "error": None},
    ]


def test_plain_display_prints_each_change_and_each_log_once() -> None:
    stream = io.StringIO()
    display = Display(stream, "plain")
    for status in statuses():
        display.status(status)
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["In queue: 1 ahead", "In queue: 0 ahead", "12:00:00 INFO  Loading"]
    assert lines[3].startswith("In progress, 0:0")
    assert lines[4] == "12:00:01 INFO  Step 1/2"
    assert lines[5].startswith("In progress [") and "1/2 steps  50%  ETA 0:01" in lines[5]
    assert len(lines) == 6


def test_tty_display_redraws_one_line_in_place() -> None:
    stream = io.StringIO()
    display = Display(stream, "tty")
    for status in statuses():
        display.status(status)
    output = stream.getvalue()
    assert output.count("\r\x1b[K") >= 6
    assert output.endswith("\n")
    # Only the log lines and the final newline end lines; the live line never does.
    assert output.count("\n") == 3


def test_json_display_emits_one_object_per_event() -> None:
    stream = io.StringIO()
    display = Display(stream, "json")
    for status in statuses():
        display.status(status)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["event"] for event in events] == ["queued", "queued", "log", "in_progress", "log", "in_progress"]
    assert events[-1]["progress"]["step"] == 1


def test_run_refuses_a_missing_image_or_out_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any request: the server is unreachable on purpose.
    argv = ["run", "fal-ai/wan-i2v", "--server", "https://127.0.0.1:9", "--image-field", "image_url"]
    assert main([*argv, "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "v.mp4")]) == 2
    assert "no such image file" in capsys.readouterr().err
    assert main([*argv, "--image", "https://x/a.png", "--out", str(tmp_path / "no" / "v.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "fal-ai/wan-i2v", "--server", "http://127.0.0.1:9", "--image", "https://x/a.png"]
    assert main([*argv, "--out", str(tmp_path / "v.mp4")]) == cli_run.EXIT_ERROR
    captured = capsys.readouterr()
    assert "cannot submit" in captured.err and captured.out == ""
