"""Where the API key comes from: --key, then $DISTILL_API_KEY, then the embedded service's key file.

The key file is the one the embedded service writes on its first start: $DISTILL_HOME/api-key,
DISTILL_HOME defaulting to var (app.config.Settings.local_key_file; a test keeps the two in step,
since the client cannot import the server's settings).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_KEY = "DISTILL_API_KEY"


@dataclass(frozen=True)
class ApiKey:
    value: str | None
    source: str | None  # where the value came from: "--key", "$DISTILL_API_KEY" or the file's path
    looked_at: tuple[str, ...]  # every place tried, in order, with what was found there

    def where(self) -> str:
        """For error messages: where the key came from, or every place that was tried."""
        if self.value is not None:
            return f"the key from {self.source}"
        return "no key found; looked at " + ", ".join(self.looked_at)


def key_file(env: Mapping[str, str] = os.environ) -> Path:
    return (Path(env.get("DISTILL_HOME") or "var") / "api-key").resolve()


def find_key(explicit: str | None = None, env: Mapping[str, str] = os.environ) -> ApiKey:
    looked = []
    if explicit:
        return ApiKey(explicit.strip(), "--key", ("--key",))
    looked.append("--key (not given)")
    if value := (env.get(ENV_KEY) or "").strip():
        return ApiKey(value, f"${ENV_KEY}", (*looked, f"${ENV_KEY}"))
    looked.append(f"${ENV_KEY} (not set)")
    path = key_file(env)
    try:
        value = path.read_text().strip()
    except OSError as exc:
        looked.append(f"{path} ({exc.strerror or 'unreadable'})")
        return ApiKey(None, None, tuple(looked))
    if not value:
        return ApiKey(None, None, (*looked, f"{path} (empty)"))
    return ApiKey(value, str(path), (*looked, str(path)))
