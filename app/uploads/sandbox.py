"""Inspection of an upload in a separate, killable process with a memory cap and a time limit.

Inspecting a teacher runs the uploaded graph on probe inputs, and converting a dataset
decodes what a stranger compressed: neither may run inside the API process. The child is
`python -m app.uploads.sandbox`; it caps its own address space (RLIMIT_AS), CPU time
(RLIMIT_CPU) and file size (RLIMIT_FSIZE) before it imports anything, reads one request
as JSON on stdin and writes one answer as JSON on stdout. The parent kills its whole
process group at the wall-clock limit, and when the request that waits for it goes away.

Answers: {"inspection": {...}} | {"error": message, "field": field}; a limit that was hit
becomes an InspectionError that names it."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from app.uploads.errors import InspectionError, UploadLimits

CODE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the `app` package
_MEMORY_WORDS = ("bad_alloc", "failed to allocate", "memoryerror", "cannot allocate", "out of memory")


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int
    seconds: float
    output_bytes: int  # the canonical arrays a dataset is converted to


@dataclass(frozen=True)
class InspectRequest:
    kind: str  # teacher | dataset
    path: str
    fmt: str
    output: str | None = None
    label_column: str = "label"
    image_size: int | None = None  # image ZIPs of mixed sizes are resized to it
    canonical_out: str | None = None


def memory_limit_error(limits: SandboxLimits) -> InspectionError:
    return InspectionError(
        f"Inspecting the file needed more than the {limits.memory_bytes} bytes of memory it may use "
        "(DISTILL_INSPECT_MEMORY_BYTES): the model allocates too much on a small probe batch, or the "
        "data expands too far. Nothing was kept.",
        field="file",
    )


def time_limit_error(limits: SandboxLimits) -> InspectionError:
    return InspectionError(
        f"Inspecting the file took longer than the {limits.seconds:g} s it may take "
        "(DISTILL_INSPECT_SECONDS): the model does not finish on a small probe batch (an endless "
        "Loop?), or the data is too slow to decode. Nothing was kept.",
        field="file",
    )


def _scrub(message: str, request: InspectRequest) -> str:
    """No server path in a message a client reads: the file is 'the upload'."""
    for path in filter(None, (request.canonical_out, request.path)):
        message = message.replace(str(Path(path).parent), "").replace(path, "the upload")
    return message.replace(str(CODE_ROOT), "")


def _from_exit(code: int, stderr: bytes, limits: SandboxLimits) -> InspectionError:
    if code in (-signal.SIGKILL, -signal.SIGXCPU):
        return time_limit_error(limits)
    if code == -signal.SIGXFSZ:
        return InspectionError(
            f"The dataset converts to more than {limits.output_bytes} bytes "
            "of arrays; upload a smaller one. Nothing was kept.",
            field="file",
        )
    if any(w in stderr.decode(errors="replace").lower() for w in _MEMORY_WORDS) or code == -signal.SIGSEGV:
        return memory_limit_error(limits)
    return InspectionError(
        "The file could not be inspected (the inspection process failed); "
        "check that it is a valid file of its format. Nothing was kept.",
        field="file",
    )


async def inspect_isolated(request: InspectRequest, limits: SandboxLimits) -> dict:
    """The inspection of `request`, run in a child process; InspectionError when refused."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    payload = json.dumps({"request": asdict(request), "limits": asdict(limits)}).encode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.uploads.sandbox",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(payload), limits.seconds)
    except TimeoutError:
        raise time_limit_error(limits) from None
    finally:
        if proc.returncode is None:  # the limit, or the client left: the child goes too
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    code = await proc.wait()  # at once: communicate() saw the exit
    if code != 0:
        raise _from_exit(code, err, limits)
    answer = json.loads(out)
    if "error" in answer:
        if answer.get("limit") == "memory":
            raise memory_limit_error(limits)
        if answer.get("limit") == "disk":  # the store is full: the route answers 507
            raise OSError(errno.ENOSPC, answer["error"])
        raise InspectionError(answer["error"], field=answer.get("field", "file"))
    return answer["inspection"]


# -- the child ------------------------------------------------------------------------------
def _cap_self(limits: SandboxLimits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    cpu = max(1, int(limits.seconds) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _memory_failure(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in _MEMORY_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _inspect(request: InspectRequest) -> dict:
    from app.uploads.dataset import inspect_dataset
    from app.uploads.teacher import inspect_teacher

    if request.kind == "teacher":
        return inspect_teacher(Path(request.path), request.fmt, output=request.output)
    assert request.canonical_out is not None  # a dataset request names where it goes
    return inspect_dataset(
        Path(request.path),
        request.fmt,
        Path(request.canonical_out),
        label_column=request.label_column,
        limits=UploadLimits(),
        image_size=request.image_size,
    )


def main() -> None:
    message = json.loads(sys.stdin.read())
    limits = SandboxLimits(**message["limits"])
    request = InspectRequest(**message["request"])
    _cap_self(limits)
    try:
        answer: dict = {"inspection": _inspect(request)}
    except InspectionError as exc:
        answer = {"limit": "memory"} if _memory_failure(exc) else {}
        answer |= {"error": _scrub(str(exc), request), "field": exc.field}
    except MemoryError:
        answer = {"error": "MemoryError", "limit": "memory"}
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        answer = {"error": "no space left for the converted dataset", "limit": "disk"}
    except Exception as exc:
        answer = {"limit": "memory"} if _memory_failure(exc) else {}
        answer |= {
            "error": _scrub(f"The file cannot be read as {request.fmt} ({type(exc).__name__}: {exc}).", request),
            "field": "file",
        }
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
