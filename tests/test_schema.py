"""The schema at start-up (app/schema.py) on real databases: an embedded SQLite file at an older
revision is migrated with its rows kept; a PostgreSQL database that is behind is refused, at head
it passes; and the newest migration goes down and up again on both."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from app.db import make_engine
from app.schema import SchemaBehind, alembic_config, ensure_schema, revisions
from tests.conftest import PG_ADMIN_URL


@pytest.fixture
def fresh_postgres():
    name = f"distill_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_an_older_sqlite_file_is_migrated_at_start_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'distill.db'}"
    command.upgrade(alembic_config(url), "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, submissions, created_at) VALUES ('t1', 'kept', 0, '2026-01-01')")
        )
    assert ensure_schema(engine) == "migrated the SQLite database from 0007 to 0009"
    assert revisions(engine) == ("0009", "0009")
    assert ensure_schema(engine) is None  # at head: nothing to do
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM tenants")).scalar_one() == "kept"
        assert conn.execute(text("SELECT count(*) FROM workers")).scalar_one() == 0
    engine.dispose()


def test_an_empty_sqlite_file_is_created_at_head(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'distill.db'}")
    (tmp_path / "new").mkdir()
    assert ensure_schema(engine) == "migrated the SQLite database from empty to 0009"
    engine.dispose()


def test_postgresql_behind_is_refused_and_at_head_passes(fresh_postgres):
    engine = make_engine(fresh_postgres)
    with pytest.raises(SchemaBehind, match="schema is at revision none \\(empty database\\), this code needs 0009"):
        ensure_schema(engine)
    command.upgrade(alembic_config(fresh_postgres), "0007")
    with pytest.raises(SchemaBehind, match="run `alembic upgrade head`"):
        ensure_schema(engine)
    assert revisions(engine)[0] == "0007"  # refused, never migrated behind the deployer's back
    command.upgrade(alembic_config(fresh_postgres), "head")
    assert ensure_schema(engine) is None
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_newest_migration_goes_down_and_up_again(database, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'distill.db'}" if database == "sqlite" else request.getfixturevalue("fresh_postgres")
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "0007")
    engine = make_engine(url)
    assert revisions(engine)[0] == "0007"
    command.upgrade(config, "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE labels IS NOT NULL")).scalar_one() == 0
    engine.dispose()
