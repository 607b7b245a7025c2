#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv with the service,
# the worker and the test tools. Safe to run again (it only installs what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
    python3 -m venv .venv
fi
# torch and torchvision first, pinned together: an unpinned torch pulls whatever build a resolver
# likes, and torchvision cannot be imported beside a torch it was not built for.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
# The service, the worker and the test tools, at the versions of the lock (requirements/service.txt,
# made by pip-compile: see README "Installing").
.venv/bin/pip install --quiet --disable-pip-version-check -c requirements/service.txt -e '.[api,worker,dev]'
