#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the service,
# the worker and the test tools. Safe to run again (it only installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
    python3 -m venv .venv
fi
# torch first and pinned: anything that pulls an unpinned torch gets a multi-GB CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[worker,dev]'
