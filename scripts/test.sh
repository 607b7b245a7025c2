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
exec .venv/bin/pytest "$@"
