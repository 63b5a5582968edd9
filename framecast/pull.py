"""`framecast pull`: fetch the weights an endpoint is bound to into the Hugging Face cache.

For machines with internet access; serving itself never downloads. The download
is huggingface_hub's: progress bars, resume of interrupted files, and files that
are already cached are not fetched again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from framecast.bindings import REPO_ID, ModelBinding, is_local_path, weight_sources


class PullError(Exception):
    """Nothing can be pulled for the target; the message says why."""


@dataclass(frozen=True)
class PullItem:
    """One repository to fetch; the patterns narrow it to what the binding loads from it."""

    repo_id: str
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PullReport:
    repo_id: str
    snapshot: Path
    files: int
    size_bytes: int
    free_bytes: int


def pull_plan(target: str, bindings: list[ModelBinding]) -> list[PullItem]:
    """What to fetch for `target`: every repo a bound endpoint loads, or a repo id itself. Raises `PullError`.

    A FramePack binding loads its transformer and image encoder from their own
    repos; the pipeline repo's own transformer is then skipped (25 GB for HunyuanVideo).
    """
    bound = {binding.endpoint_id: binding for binding in bindings}
    if target in bound:
        binding = bound[target]
        sources = weight_sources(binding)
        items: list[PullItem] = []
        for role, source in sources.items():
            if is_local_path(source):
                continue
            if role == "pipeline":
                skipped = tuple(f"{component}/*" for component in sources if component != "pipeline")
                items.append(PullItem(source, ignore_patterns=skipped or None))
            elif role == "image_encoder":
                items.append(PullItem(source, allow_patterns=("image_encoder/*", "feature_extractor/*")))
            else:
                items.append(PullItem(source))
        if not items:
            raise PullError(
                f"{target} is bound to the local directory {binding.weights}; there is nothing to pull. "
                "Bind it to a Hugging Face repo id to pull, or copy the pipeline there."
            )
        return items
    if "/" in target and REPO_ID.match(target) and not target.startswith(("fal-ai/", "wavespeed-ai/")):
        return [PullItem(target)]
    raise PullError(
        f"{target!r} is neither an endpoint bound in these bindings ({', '.join(sorted(bound)) or 'none'}) "
        "nor a Hugging Face repo id (owner/name)"
    )


def tree_size(directory: Path) -> tuple[int, int]:
    """(files, bytes) under a snapshot directory; the cache's symlinks are followed to their blobs."""
    files = [path for path in directory.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def pull(item: PullItem) -> PullReport:
    """Download `item` (resuming) into the Hugging Face cache. Raises huggingface_hub's errors."""
    from huggingface_hub import snapshot_download

    snapshot = Path(
        snapshot_download(
            item.repo_id,
            allow_patterns=list(item.allow_patterns) if item.allow_patterns else None,
            ignore_patterns=list(item.ignore_patterns) if item.ignore_patterns else None,
        )
    )
    repo_id = item.repo_id
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
