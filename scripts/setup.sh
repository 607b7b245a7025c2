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

# Fashion-MNIST (the built-in dataset `fashion_mnist`) comes from the Debian package
# dataset-fashion-mnist: installed when missing, as root through apt-get. Without root (or
# without apt) nothing is installed and everything else still works: jobs naming fashion_mnist
# are refused with a 422 that names the package, until an administrator installs it (or
# DISTILL_FASHION_MNIST_DIR points at a folder holding its four IDX files).
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: dataset-fashion-mnist is not installed and this is not root; the built-in" \
             "dataset fashion_mnist stays unavailable (sudo apt-get install dataset-fashion-mnist)" >&2
    fi
fi
