"""What a client may read of a server-side message: one bounded line without server paths
(the worker's failures, the state machine's error column). Tracebacks and full paths stay in logs."""

from __future__ import annotations

import re

MAX_MESSAGE = 500
# An absolute POSIX path of two or more parts (what torch, numpy, onnxruntime and the OS put
# in their messages); replaced by its last part, which names the file without the server's
# layout.
_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]*)")


def without_paths(text: str) -> str:
    """Every absolute path cut to its file name."""
    return _PATH.sub(lambda m: m.group(1) or "<dir>", text)


def scrub(text: str) -> str:
    """One line, bounded, without paths."""
    line = " ".join(without_paths(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."
