from __future__ import annotations

import io
import multiprocessing
import sys
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest
from PIL import Image

from framecast.bindings import ModelBinding
from framecast.engines.base import (
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    LogCallback,
    Progress,
    ProgressCallback,
    Section,
    SectionCallback,
)
from framecast.engines.safety import SafetyCheckerError, SafetyVerdict, load_safety_checker
from framecast.worker.engine_process import EngineHost, device_memory, parse_fault


@pytest.mark.parametrize(
    ("spec", "attempt", "expected"),
    [
        ("raise_at_step=2", 1, ("raise", 2)),
        ("block_at_step=1", 3, ("block", 1)),
        ("block_once_at_step=1", 1, ("block", 1)),
        ("block_once_at_step=1", 2, None),
        ("exit_at_step=4", 1, ("exit", 4)),
        ("ignore_cancel_at_step=1", 1, ("ignore_cancel", 1)),
        ("explode_at_step=1", 1, None),
        ("raise_at_step=x", 1, None),
        ("", 1, None),
        (None, 1, None),
    ],
)
def test_parse_fault(spec: str | None, attempt: int, expected: tuple[str, int] | None) -> None:
    assert parse_fault(spec, attempt=attempt) == expected


# -- EngineHost.run with a stand-in engine: previews, partial output, the safety checker --------


class SectionEngine:
    """Makes a video in `sections` sections of 4 frames, publishing each; cancels at `cancel_in_section`."""

    name: ClassVar[str] = "stand-in"

    def __init__(self, sections: int = 3, cancel_in_section: int | None = None) -> None:
        self.sections = sections
        self.cancel_in_section = cancel_in_section

    def load(self) -> None:
        pass

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None = None,
    ) -> GenerationResult:
        frames = np.zeros((0, 16, 16, 3), dtype=np.uint8)
        finished: Section | None = None
        for index in range(1, self.sections + 1):
            if index == self.cancel_in_section:
                raise GenerationCancelled(partial=finished)
            on_progress(Progress(step=index, total_steps=self.sections, elapsed_s=0.1 * index))
            frames = np.concatenate([frames, np.full((4, 16, 16, 3), 40 * index, dtype=np.uint8)])
            finished = Section(index, self.sections, frames, request.frames_per_second, "start")
            if on_section is not None:
                on_section(finished)
        return GenerationResult(frames=frames, frames_per_second=request.frames_per_second, seed=1, model="stand-in")


class FlagBright:
    """A test checker: flags videos whose mean brightness is above 60."""

    name = "flag-bright"

    def check(self, frames: Any, prompt: str) -> SafetyVerdict:
        return SafetyVerdict(flagged=float(frames.mean()) > 60, reason=f"too bright for {prompt!r}")


def build_flag_bright() -> FlagBright:
    return FlagBright()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_host(tmp_path: Path, engine: SectionEngine, checker: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """One job through `EngineHost.run`; every message it sent, in order."""
    ours, theirs = multiprocessing.Pipe()
    binding = ModelBinding("test/endpoint", "stand-in", "/nowhere")
    host = EngineHost(theirs, [binding], max_image_pixels=10_000, safety_checker=checker)
    if checker:
        host.safety_checker = load_safety_checker(checker)
    host.engines["test/endpoint"] = engine
    generation = {
        "prompt": "a lamp",
        "width": 16,
        "height": 16,
        "num_frames": 12,
        "frames_per_second": 8,
        "num_inference_steps": 3,
        "seed": 1,
        "options": options,
    }
    host.run(
        {
            "endpoint_id": "test/endpoint",
            "generation": generation,
            "images": {"image": png_bytes()},
            "output_path": str(tmp_path / "out.mp4"),
        }
    )
    messages = []
    while ours.poll(0):
        messages.append(ours.recv())
    return messages


def frame_count(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def test_each_section_becomes_a_preview_mp4(tmp_path: Path) -> None:
    messages = run_host(tmp_path, SectionEngine(sections=3))
    previews = [message for message in messages if message["type"] == "preview"]
    assert [(p["section"], p["sections"], p["num_frames"]) for p in previews] == [(1, 3, 4), (2, 3, 8), (3, 3, 12)]
    assert [frame_count(p["path"]) for p in previews] == [4, 8, 12]
    assert messages[-1]["type"] == "done" and frame_count(messages[-1]["output_path"]) == 12


def test_a_cancel_keeps_the_finished_sections(tmp_path: Path) -> None:
    messages = run_host(tmp_path, SectionEngine(sections=3, cancel_in_section=3))
    final = messages[-1]
    assert final["type"] == "cancelled"
    partial = final["partial"]
    assert (partial["section"], partial["sections"], partial["num_frames"], partial["placement"]) == (2, 3, 8, "start")
    assert frame_count(partial["output_path"]) == 8


def test_a_cancel_before_any_section_has_no_partial(tmp_path: Path) -> None:
    assert run_host(tmp_path, SectionEngine(sections=3, cancel_in_section=1))[-1] == {"type": "cancelled"}


def test_safety_check_requested_without_a_checker_is_logged_as_not_done(tmp_path: Path) -> None:
    messages = run_host(tmp_path, SectionEngine(), enable_safety_checker=True)
    warnings = [m for m in messages if m["type"] == "log" and m["level"] == "WARN"]
    assert len(warnings) == 1 and "NOT checked" in warnings[0]["message"]
    assert messages[-1]["type"] == "done"


def test_a_flagged_output_fails_the_job_and_is_not_kept(tmp_path: Path) -> None:
    checker = "tests.worker.test_engine_process:build_flag_bright"
    messages = run_host(tmp_path, SectionEngine(sections=3), checker=checker, enable_safety_checker=True)
    assert messages[-1] == {
        "type": "failed",
        "status_code": 422,
        "error_type": "content_policy_violation",
        "error": "The safety checker flag-bright flagged the output: too bright for 'a lamp'",
    }
    assert not (tmp_path / "out.mp4").exists()


def test_a_passing_output_says_which_checker_passed_it(tmp_path: Path) -> None:
    checker = "tests.worker.test_engine_process:build_flag_bright"
    messages = run_host(tmp_path, SectionEngine(sections=1), checker=checker, enable_safety_checker=True)
    assert any(m["type"] == "log" and m["message"] == "Safety checker flag-bright: passed" for m in messages)
    assert messages[-1]["type"] == "done"
    # Not requested: the checker does not run.
    messages = run_host(tmp_path, SectionEngine(sections=3), checker=checker, enable_safety_checker=False)
    assert messages[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "expected MODULE:FACTORY"),
        ("tests.worker.no_such_module:build", "cannot be imported"),
        ("tests.worker.test_engine_process:missing", "cannot be imported"),
        ("tests.worker.test_engine_process:png_bytes", "without check()"),
    ],
)
def test_a_bad_safety_checker_spec_is_explained(spec: str, message: str) -> None:
    with pytest.raises(SafetyCheckerError, match=message):
        load_safety_checker(spec)


def test_a_checker_that_cannot_load_fails_every_binding(tmp_path: Path) -> None:
    _, theirs = multiprocessing.Pipe()
    bindings = [ModelBinding("a/b", "diffusers-wan-i2v", "/x"), ModelBinding("c/d", "diffusers-svd", "/y")]
    host = EngineHost(theirs, bindings, max_image_pixels=100, safety_checker="nope")
    failures = host.load()
    assert set(failures) == {"a/b", "c/d"}
    assert all("safety checker could not be loaded" in reason for reason in failures.values())


# -- GPU memory reports ------------------------------------------------------------------------------------------


class FakeCuda:
    """torch.cuda as the caching allocator reports it: device 1 never used by this process."""

    def __init__(self, initialized: bool = True) -> None:
        self.initialized = initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 2

    def memory_reserved(self, index: int) -> int:
        return [6 * 2**30, 0][index]

    def memory_allocated(self, index: int) -> int:
        return [5 * 2**30, 0][index]

    def get_device_properties(self, index: int) -> Any:
        return type("Properties", (), {"total_memory": 80 * 2**30})()


def test_device_memory_reports_the_devices_this_process_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", type("Torch", (), {"cuda": FakeCuda()})())
    assert device_memory() == [
        {"device": "cuda:0", "allocated_bytes": 5 * 2**30, "reserved_bytes": 6 * 2**30, "total_bytes": 80 * 2**30}
    ]
    monkeypatch.setitem(sys.modules, "torch", type("Torch", (), {"cuda": FakeCuda(initialized=False)})())
    assert device_memory() == [], "no CUDA context yet (a CPU engine): nothing to report, and none is made"
    monkeypatch.delitem(sys.modules, "torch")
    assert device_memory() == []


def test_every_job_ends_with_a_memory_report_before_its_last_message(tmp_path: Path) -> None:
    for engine in (SectionEngine(sections=1), SectionEngine(sections=3, cancel_in_section=1)):
        messages = run_host(tmp_path, engine)
        assert (messages[-2]["type"], messages[-1]["type"]) in (("resources", "done"), ("resources", "cancelled"))
        assert [message for message in messages if message["type"] == "resources"] == [
            {"type": "resources", "devices": device_memory()}
        ]
