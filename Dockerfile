# syntax=docker/dockerfile:1
#
# One image, two commands: the API (uvicorn) and the GPU worker (celery).
# docker-compose.yml picks the command per service.
#
# Layers are ordered from "changes rarely" to "changes often":
#   1. torch (pinned, several GB: the CUDA build on PyPI linux x86_64)
#   2. the project's dependencies, resolved from pyproject.toml alone
#   3. the project's code
# so editing code rebuilds only the last, small layer.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Non-root runtime user. /data/* belong to it so that named volumes mounted
# there (artifacts, data cache) are created writable for it.
RUN groupadd --system --gid 10001 distill \
 && useradd --system --uid 10001 --gid distill --create-home \
        --home-dir /home/distill --shell /usr/sbin/nologin distill \
 && mkdir -p /data/artifacts /data/cache /data/home \
 && chown -R distill:distill /data

WORKDIR /srv/distill

# 0. Fashion-MNIST's IDX files (the built-in dataset fashion_mnist) from Debian's package.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

# 1. torch and torchvision first, pinned together to the versions of the `worker` extra in
#    pyproject.toml (tests/test_deploy_files.py checks they agree).
RUN pip install torch==2.14.1 torchvision==0.29.1

# 2. dependencies only: pyproject.toml with stub packages, so this layer is
#    reused until pyproject.toml itself changes. torch is already satisfied.
#    No dev extras in the image.
#    Versions: the lock, requirements/service.txt (constraints: nothing beyond the extras is installed).
COPY pyproject.toml ./
COPY requirements/ requirements/
RUN mkdir app worker \
 && touch app/__init__.py worker/__init__.py \
 && pip install -c requirements/service.txt ".[api,worker]" \
 && pip uninstall -y distill \
 && rm -rf app worker build ./*.egg-info

# 3. the code, then the package itself (no deps: they are all in layer 2).
COPY alembic.ini ./
COPY migrations/ migrations/
COPY app/ app/
COPY worker/ worker/
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info

ENV HOME=/home/distill \
    DISTILL_ARTIFACT_DIR=/data/artifacts \
    DISTILL_DATA_CACHE_DIR=/data/cache \
    DISTILL_HOME=/data/home

USER distill

EXPOSE 8000

# Default: the API. Compose runs migrations first and overrides this per service.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
