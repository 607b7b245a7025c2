"""What importing some modules drags in, seen from a fresh interpreter (this process has
imported everything already)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def loaded_after(imports: str, watched: tuple[str, ...]) -> list[str]:
    """The `watched` top-level modules present in sys.modules after running `imports` (Python
    statements) in a new interpreter at the repository root."""
    code = f"import sys, json; {imports}; print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
