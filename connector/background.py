"""Background work of a server process: course provisioning, webhook delivery and the calendar mirror."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from calendars.config import CalendarConfig
from calendars.worker import CalendarWorker
from storage import courses, files
from storage.db import Database
from storage.secrets import SecretBox
from webhooks.config import DeliveryConfig
from webhooks.worker import Worker

log = logging.getLogger("coursewire.background")


class Provisioner:
    """Finishes course provisioning. `run_once()` does what is due now; `run(stop)` settles uploads a crash left
    half-stored, then loops until stopped.

    A course whose folder cannot be created ends Failed (or, for an error that may pass, waits to be retried
    for `storage.courses.RETRY_FOR` while the other courses go on): each is logged once, without a traceback.
    """

    def __init__(self, db: Database, files_dir: Path, interval: float = 1.0, batch: int = 100) -> None:
        self.db = db
        self.files_dir = files_dir
        self.interval = interval
        self.batch = batch
        self._retrying: set[str] = set()  # courses whose retry was logged, so each is told once

    def run_once(self) -> int:
        """Advance provisioning by up to `batch` steps; return how many steps changed a course.

        Each course waiting to retry a transient error is tried once per pass, after which the pass goes
        on with the courses behind it.
        """
        steps = 0
        retrying: set[str] = set()
        for _ in range(self.batch):
            step = courses.provision_step(self.db, self.files_dir, retrying)
            if step is None:
                break
            if step.retry:
                if step.course_id not in self._retrying:
                    self._retrying.add(step.course_id)
                    log.warning(
                        "course %s: %s; trying again every pass for up to %s",
                        step.course_id,
                        step.error,
                        courses.RETRY_FOR,
                    )
                continue
            self._retrying.discard(step.course_id)
            if step.after == "Failed" and step.before != "Failed":
                log.warning("course %s: provisioning failed: %s", step.course_id, step.error)
            steps += step.after != step.before
        return steps

    def recover(self) -> None:
        """Settle uploads a killed process left between their row and their file (storage.files.finish_pending)."""
        try:
            moved = files.finish_pending(self.db, self.files_dir)
        except Exception:
            log.exception("settling interrupted uploads failed; the next start tries again")
            return
        if moved:
            log.info("moved %d upload(s) recorded before a crash into place", moved)

    def run(self, stop: threading.Event) -> None:
        """Settle interrupted uploads once, then provision every `interval` seconds until `stop` is set.

        An unexpected error is logged with its traceback when it first occurs, not again while it repeats.
        """
        self.recover()
        last_error: str | None = None
        while not stop.is_set():
            try:
                busy = self.run_once()
                last_error = None
            except Exception as exc:  # keep serving; the failed step is retried on the next pass
                if repr(exc) != last_error:
                    log.exception(
                        "provisioning step failed; retrying every %gs, logged again when it changes", self.interval
                    )
                last_error = repr(exc)
                busy = 0
            if not busy:
                stop.wait(self.interval)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="coursewire-provisioner", daemon=True)
        thread.start()
        return thread, stop


class DeliveryThread:
    """The webhook delivery worker and the calendar mirror's worker on one thread and event loop, as
    `coursewire serve` runs them."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        config: DeliveryConfig,
        calendar: CalendarConfig | None = None,
        public_url: str = "",
    ) -> None:
        self.worker = Worker(db, box, config)
        self.calendars = CalendarWorker(db, box, calendar or CalendarConfig(), public_url=public_url)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="coursewire-webhooks", daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._ready.set()
        self._loop.run_until_complete(run_both(self.worker, self.calendars, self._stop))
        self._loop.close()

    def start(self) -> DeliveryThread:
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the sends in flight, record them, and end the thread.

        Waits up to one attempt's timeout and a margin by default: a send cut short goes again after
        its lease, a duplicate a clean shutdown should not cause.
        """
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.worker.config.timeout + 5 if timeout is None else timeout)


async def run_both(delivery: Worker, mirror: CalendarWorker, stop: asyncio.Event) -> None:
    """Deliver webhooks and mirror calendars on one event loop until `stop` is set."""
    async with mirror:
        await asyncio.gather(delivery.run(stop), mirror.run(stop))
