"""Run jobs with the unmodified fal-client against any server, in a process of its own.

fal-client reads its hosts from the environment when it is imported, so a test that needs it
against a second server runs this script: `python -m tests.e2e.fal_subprocess` with FAL_KEY,
FAL_QUEUE_RUN_HOST and SSL_CERT_FILE set, and `[{"endpoint", "arguments"}, ...]` on stdin.
It submits every job at once, waits for each, and prints `[{"request_id", "result"|"error"}, ...]`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import fal_client


def main() -> None:
    jobs: list[dict[str, Any]] = json.load(sys.stdin)
    handles = [fal_client.submit(job["endpoint"], arguments=job["arguments"]) for job in jobs]
    results: list[dict[str, Any]] = []
    for handle in handles:
        entry: dict[str, Any] = {"request_id": handle.request_id}
        try:
            entry["result"] = handle.get()
        except fal_client.client.FalClientHTTPError as error:
            entry["error"] = {"status_code": error.status_code, "message": str(error)}
        results.append(entry)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
