"""The runner process: started with the `spawn` method by the worker's supervisor
(worker/runner.py), it imports torch once and runs one job after another, each sent
through a pipe. It never forks after importing torch (CUDA does not survive a fork).

It dies with its parent (PR_SET_PDEATHSIG), so an orphan never trains on after its
worker is gone. SIGTERM asks the running job to stop at the next batch; a job stuck in
native code ignores that, and the supervisor then sends SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import platform
import signal
import sys
import threading
import time
from typing import Any

from app.config import get_settings
from worker.runner_db import StopReason

log = logging.getLogger("worker.runner")
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the watchdog below still notices
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def torch_threads() -> int:
    """The setting, else the CPUs this process may run on (a container's or taskset's
    allotment, not the host's count)."""
    return get_settings().torch_threads or len(os.sched_getaffinity(0))


def warm_up() -> None:
    """Pay the fixed costs once per process, not once per job."""
    import torch

    torch.set_num_threads(torch_threads())
    import worker.distill.pipeline
    from worker.distill.teachers import OnnxTeacher

    OnnxTeacher.batch_seconds = get_settings().teacher_batch_seconds

    # torch.optim imports torch._dynamo (1-2 s) on an optimizer's first add_param_group and
    # step (torch._disable_dynamo, graph_break): unavoidable without patching torch, so it
    # happens here, once per process, with one step on a throwaway parameter.
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    # What the imports made lives as long as the process: keep it out of the collector's
    # sight, so that collections (automatic ones while training too) scan only what jobs
    # make. A full collection of the imported heap costs ~0.5 s.
    gc.collect()
    gc.freeze()
    import worker.runner_job  # noqa: F401 - loaded here, not on the first job


def devices() -> list[dict]:
    """What this process can train on, as torch sees it (the worker's heartbeat reports it)."""
    import torch

    found: list[dict] = [{"type": "cpu", "name": platform.machine() or "cpu", "count": torch_threads()}]
    if torch.cuda.is_available():
        found += [
            {"type": "cuda", "index": i, "name": torch.cuda.get_device_name(i)}
            for i in range(torch.cuda.device_count())
        ]
    return found


def release_memory() -> None:
    """Give memory back between jobs: the next job may be another tenant's, on the same GPU.
    Tensors go with their last reference; a collection frees those held in cycles: a full
    one where GPU memory is at stake, the young generations (cheap) otherwise."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    else:
        gc.collect(1)


def _on_sigterm(stop_flag: Any):
    def handler(signum, frame) -> None:
        if stop_flag.value == StopReason.NONE:
            stop_flag.value = StopReason.HAND_BACK

    return handler


def main(conn: Any, stop_flag: Any, parent_pid: int, devices_conn: Any = None) -> None:
    """The process's whole life: warm up, report its devices, then ("run", job_id, owner) ->
    ("done", job_id) until the pipe closes."""
    _die_with_parent(parent_pid)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="[%(asctime)s: %(levelname)s/runner %(process)d] %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _on_sigterm(stop_flag))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the supervisor decides
    started = time.perf_counter()
    warm_up()
    log.info("runner ready in %.2fs (torch threads: %d)", time.perf_counter() - started, torch_threads())
    if devices_conn is not None:
        try:
            devices_conn.send(devices())
        except Exception:  # no device report is no reason not to train: the heartbeat says cpu
            log.exception("could not list this runner's devices")
        devices_conn.close()
    conn.send(("ready", os.getpid()))

    from worker.runner_job import run_attempt

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _, job_id, owner = message
        try:
            run_attempt(job_id, owner, stop_flag)
        except Exception:
            log.exception("job %s: could not record its end", job_id)
        finally:
            release_memory()
        conn.send(("done", job_id))
