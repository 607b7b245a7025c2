"""The supervisor: runs in the Celery worker's process (no torch there) and hands each job
it claimed to the worker's one long-lived runner process (worker/runner_child.py).

While the job runs, the supervisor renews the job's lease, and watches the job's time
limit, its cancel flag, the lease and the worker's shutdown. When one of them says stop,
it sets the shared stop flag (the job stops at the next batch boundary and records why);
a job that does not stop within `stop_grace_seconds` (a teacher stuck in native code) gets
SIGTERM, then SIGKILL after `kill_grace_seconds`. The supervisor then records the ending
itself (failed / cancelled / handed back) and starts a fresh runner process, so the
worker takes its next job within seconds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from datetime import datetime
from typing import Any

from app import jobs
from app.config import get_settings
from app.models import utcnow
from worker.runner_child import main as runner_main  # no torch at import: the child imports it
from worker.runner_db import StopReason, end_crashed, end_stopped, in_transaction

log = logging.getLogger(__name__)
CANCEL_POLL_SECONDS = 0.5

# Set by the worker's shutdown signal (worker/celery_app.py): running jobs are handed back.
shutting_down = threading.Event()


class RunnerProcess:
    """The worker's runner process: started with `spawn`, replaced when killed or dead."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self.process: Any = None
        self.conn: Any = None
        self.stop_flag: Any = None
        self.devices_conn: Any = None  # the runner's one report of its devices (worker/heartbeat.py reads it)
        self.devices: list[dict] | None = None

    def ensure_started(self) -> None:
        with self._lock:
            if self.process is not None and self.process.is_alive():
                return
            self.stop_flag = self._context.Value("i", StopReason.NONE, lock=False)
            self.conn, child_conn = self._context.Pipe()
            self.devices_conn, devices_child = self._context.Pipe(duplex=False)
            self.process = self._context.Process(
                target=runner_main,
                args=(child_conn, self.stop_flag, os.getpid(), devices_child),
                name="distill-runner",
            )
            self.process.start()
            child_conn.close()
            devices_child.close()
            log.info("runner process %s started", self.process.pid)

    def reported_devices(self) -> list[dict] | None:
        """The devices the runner process found (torch's view: CUDA_VISIBLE_DEVICES, a CPU-only
        build), once it has said; kept across replacements of the process."""
        with self._lock:
            try:
                if self.devices_conn is not None and self.devices_conn.poll():
                    self.devices = self.devices_conn.recv()
            except (EOFError, OSError):  # said already (the pipe is closed), or died before it said
                self.devices_conn = None
            return self.devices

    def run(self, job_id: str, owner: str) -> None:
        self.stop_flag.value = StopReason.NONE
        self.conn.send(("run", job_id, owner))

    def wait_done(self, timeout: float) -> bool | None:
        """True: the job ended; False: still running; None: the process died."""
        try:
            while self.conn.poll(timeout):
                message = self.conn.recv()
                if message[0] == "done":
                    return True
                timeout = 0  # "ready": read on
        except (EOFError, OSError):
            return None
        return None if not self.process.is_alive() else False

    def kill(self, grace: float) -> None:
        """SIGTERM, then SIGKILL once `grace` has passed; waits until it is gone."""
        process = self.process
        if process.is_alive():
            process.terminate()
            process.join(grace)
        if process.is_alive():
            log.warning("runner process %s ignored SIGTERM for %.0fs: SIGKILL", process.pid, grace)
            process.kill()
            process.join()
        self.conn.close()

    def close(self) -> None:
        """At worker exit: end the process (it waits for no job now)."""
        if self.process is None or not self.process.is_alive():
            return
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        self.kill(get_settings().kill_grace_seconds)


RUNNER = RunnerProcess()


class Supervision:
    """One job on the runner process: the lease, the reasons to stop, and the ending."""

    def __init__(self, job_id: str, owner: str, deadline: datetime | None) -> None:
        settings = get_settings()
        self.job_id, self.owner, self.deadline = job_id, owner, deadline
        self.lease_seconds = settings.lease_seconds
        self.heartbeat_seconds = settings.heartbeat_seconds
        self.lease_lost = threading.Event()
        self.finished = threading.Event()
        self._next_cancel_check = 0.0

    def heartbeat(self) -> None:
        """Renew the lease until the job ends (from here: the runner may be stuck)."""
        while not self.finished.wait(self.heartbeat_seconds):
            try:
                held = in_transaction(lambda s: jobs.renew_lease(s, self.job_id, self.owner, self.lease_seconds))
            except Exception:
                log.exception("heartbeat of job %s failed", self.job_id)
                continue
            if not held:
                log.warning("job %s: lease lost; stopping", self.job_id)
                self.lease_lost.set()
                return

    def reason_to_stop(self) -> StopReason:
        if self.lease_lost.is_set():
            return StopReason.LOST
        if shutting_down.is_set():
            return StopReason.HAND_BACK
        if self.deadline is not None and utcnow() > self.deadline:
            return StopReason.DEADLINE
        now = time.monotonic()
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CANCEL_POLL_SECONDS
            try:
                if in_transaction(lambda s: jobs.cancel_requested(s, self.job_id)):
                    return StopReason.CANCEL
            except Exception:
                log.warning("job %s: could not read its cancel flag", self.job_id)
        return StopReason.NONE

    def run(self, runner: RunnerProcess) -> None:
        threading.Thread(target=self.heartbeat, name=f"heartbeat-{self.job_id}", daemon=True).start()
        try:
            self._watch(runner)
        finally:
            self.finished.set()

    def _watch(self, runner: RunnerProcess) -> None:
        settings = get_settings()
        runner.run(self.job_id, self.owner)
        reason, asked_at = StopReason.NONE, 0.0
        while True:
            done = runner.wait_done(0.1)
            if done:
                return
            if done is None:
                runner.process.join(5)  # reap it: its exit code says how it died
                log.error("job %s: the runner process died (exit code %s)", self.job_id, runner.process.exitcode)
                end_crashed(self.job_id, self.owner, runner.process.exitcode)
                self._replace(runner)
                return
            if reason == StopReason.NONE:
                reason = self.reason_to_stop()
                if reason != StopReason.NONE:
                    log.info("job %s: asking it to stop (%s)", self.job_id, reason.name.lower())
                    runner.stop_flag.value = reason
                    asked_at = time.monotonic()
            elif time.monotonic() - asked_at > settings.stop_grace_seconds:
                log.warning(
                    "job %s did not stop within %.0fs (%s): killing its runner process",
                    self.job_id,
                    settings.stop_grace_seconds,
                    reason.name.lower(),
                )
                runner.kill(settings.kill_grace_seconds)
                end_stopped(self.job_id, self.owner, reason)
                self._replace(runner)
                return

    @staticmethod
    def _replace(runner: RunnerProcess) -> None:
        """A fresh runner process (warming up while the worker waits for its next task)."""
        if not shutting_down.is_set():
            runner.ensure_started()


# One runner process, one job at a time (a worker started with --concurrency 2 would
# otherwise send two jobs down one pipe).
_ONE_AT_A_TIME = threading.Lock()


def supervise(job_id: str, owner: str, deadline: datetime | None) -> None:
    """Run a job this worker claimed for `owner`, until it ended one way or another."""
    with _ONE_AT_A_TIME:
        RUNNER.ensure_started()
        Supervision(job_id, owner, deadline).run(RUNNER)
