#!/usr/bin/env bash
# The whole test suite. Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on
# 127.0.0.1:6379; .ci/run starts them when they are not answering.
# Before the tests: the linter, the formatter's check and the type checker (mypy on app/ and
# worker/), all configured in pyproject.toml; any finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Every test starts API, worker and runner processes; where PYTHONDONTWRITEBYTECODE is set (this
# machine's environment sets it) each of them would compile the project's sources again: ~0.4 s of
# CPU per process, compiled here once instead (the flag only stops writing, not reading).
.venv/bin/python -m compileall -q -j 0 app worker tests bench migrations >/dev/null
exec .venv/bin/pytest "$@"
