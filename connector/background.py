"""Background work of a server process: course provisioning (and, with issue 3, webhook delivery)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from storage import courses
from storage.db import Database

log = logging.getLogger("coursewire.background")


class Provisioner:
    """Finishes course provisioning. `run_once()` does what is due now; `run(stop)` loops until stopped."""

    def __init__(self, db: Database, files_dir: Path, interval: float = 1.0, batch: int = 100) -> None:
        self.db = db
        self.files_dir = files_dir
        self.interval = interval
        self.batch = batch

    def run_once(self) -> int:
        """Advance provisioning by up to `batch` steps; return how many steps were taken."""
        steps = 0
        while steps < self.batch and courses.provision_step(self.db, self.files_dir):
            steps += 1
        return steps

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # keep serving; the failed step is retried on the next pass
                log.exception("provisioning step failed")
                busy = 0
            if not busy:
                stop.wait(self.interval)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="coursewire-provisioner", daemon=True)
        thread.start()
        return thread, stop
