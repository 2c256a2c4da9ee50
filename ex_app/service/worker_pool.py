"""The ExApp's own worker processes (``recognize worker``, :mod:`ex_app.work.worker`), run on
the settings in force; workers on other machines may join the same queue and database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from ex_app.config import Settings

WORKER_STOP_SECONDS = 30  # a worker finishes its file in this time after SIGTERM, or is killed


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of a worker process: this one's (AppAPI's credentials included) with
    the settings in force as its RECOGNIZE_* variables (a section as JSON)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RECOGNIZE_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"RECOGNIZE_{name.upper()}"] = text
    return env


class WorkerPool:
    """The ExApp's own worker processes, started on the settings in force."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self._processes: list[subprocess.Popen] = []

    def ensure(self, settings: Settings) -> None:
        """Workers for these settings: started if none run, restarted if the settings changed."""
        if settings != self.settings:
            self.stop()
        self._processes = [p for p in self._processes if p.poll() is None]
        while len(self._processes) < settings.nextcloud.jobs:
            worker = [sys.executable, "-m", "ex_app", "worker"]
            self._processes.append(subprocess.Popen(worker, env=worker_environment(settings)))
        self.settings = settings

    def stop(self) -> None:
        """Let each worker finish its file and stop (killed after WORKER_STOP_SECONDS)."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(WORKER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []
        self.settings = None
