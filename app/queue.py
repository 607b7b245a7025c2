"""Send jobs to the workers by task name: the API never imports the worker or torch.

The Celery configuration lives here too, so the API's client and the worker
(worker/celery_app.py) cannot disagree on it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, cast

from celery import Celery

from app.config import Settings, get_settings

if TYPE_CHECKING:
    from kombu.transport.virtual import Channel

RUN_JOB_TASK = "distill.run_job"


def celery_config(settings: Settings) -> dict:
    config = {
        "broker_url": settings.broker_url,
        # The database is the source of truth for jobs; Celery results are not kept.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.queue,
        "task_routes": {RUN_JOB_TASK: {"queue": settings.queue}},
        # A job is acknowledged only when it ends, so a worker that dies mid-job
        # leaves it for another; run_job is idempotent on our job id.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # One job at a time per worker, run by a thread of the worker's main process that
        # supervises the worker's long-lived runner process (worker/runner.py): nothing forks.
        "worker_pool": "threads",
        "worker_concurrency": 1,
        "broker_connection_retry_on_startup": True,
        # Fail fast when the broker is down instead of hanging the HTTP request.
        "broker_connection_timeout": 3,
        "broker_transport_options": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            # A broker that vanishes mid-publish must not hang an HTTP request.
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Look for overdue unacknowledged tasks a few times per visibility timeout
            # (kombu's default is every ~100 s whatever the timeout).
            "unacked_restore_interval": min(60, max(1, settings.visibility_timeout_seconds // 4)),
            "unacked_restore_throttle": 1,
        },
        "worker_hijack_root_logger": False,
    }
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.broker_dir / "messages"
        processed = settings.broker_dir / "processed"
        for path in (folder, processed):
            path.mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "control_folder": str(settings.broker_dir / "control"),
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(processed),
            "store_processed": False,
            # An idle worker looks for a message this often (kombu's default: every second).
            "polling_interval": settings.broker_poll_seconds,
        }
    return config


@lru_cache
def _client() -> Celery:
    client = Celery("distill-api")
    client.conf.update(celery_config(get_settings()))
    return client


def reset_client() -> None:
    """Forget the cached client (a forked process must not reuse its parent's connections)."""
    _client.cache_clear()


def enqueue_job(job_id: str) -> None:
    """Wake a worker for this job. Call only after the job row is committed."""
    _client().send_task(RUN_JOB_TASK, args=[job_id], queue=get_settings().queue)


def pending_messages() -> int:
    """Messages waiting in the job queue, not yet taken by a worker (Redis: the list's
    length; filesystem: the files of the queue)."""
    with _client().connection_for_write() as conn:
        # Not passive: Redis keeps no key for an empty list, and a passive declare would say
        # the queue does not exist. A declare only counts on these virtual transports.
        channel = cast("Channel", conn.default_channel)  # Redis and filesystem: virtual channels
        return channel.queue_declare(queue=get_settings().queue).message_count


def broker_reachable() -> bool:
    try:
        with _client().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
