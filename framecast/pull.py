"""`framecast pull`: fetch the weights an endpoint is bound to into the Hugging Face cache.

For machines with internet access; serving itself never downloads. The download
is huggingface_hub's: progress bars, resume of interrupted files, and files that
are already cached are not fetched again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from framecast.bindings import REPO_ID, ModelBinding


class PullError(Exception):
    """Nothing can be pulled for the target; the message says why."""


@dataclass(frozen=True)
class PullReport:
    repo_id: str
    snapshot: Path
    files: int
    size_bytes: int
    free_bytes: int


def repo_for(target: str, bindings: list[ModelBinding]) -> str:
    """The repo id to fetch for `target`: a bound endpoint id, or a repo id itself. Raises `PullError`."""
    bound = {binding.endpoint_id: binding for binding in bindings}
    if target in bound:
        binding = bound[target]
        if binding.weights_are_local:
            raise PullError(
                f"{target} is bound to the local directory {binding.weights}; there is nothing to pull. "
                "Bind it to a Hugging Face repo id to pull, or copy the pipeline there."
            )
        return binding.weights
    if "/" in target and REPO_ID.match(target) and not target.startswith(("fal-ai/", "wavespeed-ai/")):
        return target
    raise PullError(
        f"{target!r} is neither an endpoint bound in these bindings ({', '.join(sorted(bound)) or 'none'}) "
        "nor a Hugging Face repo id (owner/name)"
    )


def tree_size(directory: Path) -> tuple[int, int]:
    """(files, bytes) under a snapshot directory; the cache's symlinks are followed to their blobs."""
    files = [path for path in directory.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def pull(repo_id: str) -> PullReport:
    """Download `repo_id` (resuming) into the Hugging Face cache. Raises huggingface_hub's errors."""
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(repo_id))
    files, size_bytes = tree_size(snapshot)
    return PullReport(
        repo_id=repo_id,
        snapshot=snapshot,
        files=files,
        size_bytes=size_bytes,
        free_bytes=shutil.disk_usage(snapshot).free,
    )


def format_bytes(size_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size_bytes < 1024:
            return f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    return f"{size_bytes:.1f} TiB"
