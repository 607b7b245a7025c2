"""The database schema at start-up: the embedded service (SQLite) migrates itself; a server database
(PostgreSQL) is migrated explicitly (`alembic upgrade head`, as the compose api does before it
serves) and an API process refuses to start on a schema that is behind its code.

Both the API (app/main.py) and a worker (worker/celery_app.py) call `ensure_schema` as they
start; on SQLite a file lock beside the database makes the first one migrate and the others wait.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


class SchemaBehind(RuntimeError):
    """The database is not at the revision this code needs, and it is not ours to migrate."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False  # the service's logging stays as it is
    return config


def revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, None when it has none; the code's head, None when the
    migrations folder has no revision)."""
    head = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False))).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """Processes starting together on one SQLite file migrate it one after the other."""
    database = make_url(url).database
    if database is None:
        raise ValueError(f"{url!r} names no database file to lock beside (an in-memory SQLite database)")
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_schema(engine: Engine) -> str | None:
    """Bring an embedded (SQLite) database to head, or check that a server database is there.
    Returns what was migrated (None: nothing to do); raises SchemaBehind when a server database lags."""
    url = engine.url.render_as_string(False)
    if not MIGRATIONS.is_dir():  # an install without the source tree: migrations are the deployer's
        log.warning("no migrations folder at %s: the database schema is not checked", MIGRATIONS)
        return None
    if engine.dialect.name != "sqlite":
        current, head = revisions(engine)
        if current != head:
            raise SchemaBehind(
                f"the database schema is at revision {current or 'none (empty database)'}, this code needs "
                f"{head}: run `alembic upgrade head` with the same DISTILL_DATABASE_URL, then start again"
            )
        return None
    with _migration_lock(url):
        current, head = revisions(engine)
        if current == head:
            return None
        command.upgrade(alembic_config(url), "head")
    return f"migrated the SQLite database from {current or 'empty'} to {head}"
