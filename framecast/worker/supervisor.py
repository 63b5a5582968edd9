"""`framecast serve` starts its GPU workers as child processes and keeps them running."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from framecast.settings import Settings

logger = logging.getLogger("framecast.supervisor")

SUPERVISOR_PID_ENV = "FRAMECAST_SUPERVISOR_PID"
MAX_RESTART_DELAY_S = 30.0


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process read exactly these settings."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FRAMECAST_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        environment[f"FRAMECAST_{name.upper()}"] = text
    return environment


class WorkerSupervisor:
    """Runs `count` `framecast worker` processes; restarts any that dies, with backoff."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.stopping = threading.Event()
        self.monitor = threading.Thread(target=self._monitor, name="worker-supervisor", daemon=True)

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        environment = settings_environment(self.settings)
        environment[SUPERVISOR_PID_ENV] = str(os.getpid())
        process = subprocess.Popen([sys.executable, "-m", "framecast", "worker"], env=environment)
        logger.info("started worker %d (pid %d)", slot, process.pid)
        return process

    def start(self) -> None:
        for slot in range(self.count):
            self.processes[slot] = self._spawn(slot)
        self.monitor.start()

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process is not None]

    def _monitor(self) -> None:
        delays = [1.0] * self.count
        while not self.stopping.wait(0.5):
            for slot, process in enumerate(self.processes):
                if process is None or process.poll() is None:
                    continue
                logger.error("worker %d (pid %d) exited with %s; restarting", slot, process.pid, process.returncode)
                if self.stopping.wait(delays[slot]):
                    return
                delays[slot] = min(delays[slot] * 2, MAX_RESTART_DELAY_S)
                self.processes[slot] = self._spawn(slot)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each hands its running job back), then SIGKILL stragglers after `timeout_s`."""
        self.stopping.set()
        alive = [process for process in self.processes if process is not None and process.poll() is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in alive:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
