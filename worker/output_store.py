"""The tenant's cache of teacher outputs on the database and the artifact store: the engine's
OutputStore (worker/distill/cache.py). One row per file (its sha256, size, last use); a tenant's
files past `teacher_cache_bytes` go, least recently used first."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.models import TeacherOutput, utcnow
from app.storage import get_storage
from worker.distill.cache import CachedFile
from worker.runner_db import in_transaction
from worker.teacher_builds import count


class OutputStore:
    def __init__(self, tenant_id: str, cap_bytes: int) -> None:
        self.tenant_id, self.cap_bytes = tenant_id, cap_bytes
        self.max_features_bytes = cap_bytes // 2  # one file never pushes out everything else

    def _key(self, key: str) -> str:
        return f"teacher-outputs/{self.tenant_id}/{key}.npz"

    def lookup(self, key: str) -> CachedFile | None:
        def find(s: Session) -> CachedFile | None:
            row = s.get(TeacherOutput, (self.tenant_id, key))
            if row is None:
                return None
            row.last_used_at = utcnow()
            count(s, self.tenant_id, hits=1)
            return CachedFile(get_storage().path(row.storage_key), row.sha256)

        return in_transaction(find)

    def store(self, key: str, path: Path) -> int:
        stored = get_storage().put_file(Path(path), self._key(key))

        def write(s: Session) -> int:
            row = s.get(TeacherOutput, (self.tenant_id, key))
            if row is None:
                row = TeacherOutput(tenant_id=self.tenant_id, key=key)
                s.add(row)
            row.storage_key, row.sha256, row.size_bytes = stored.key, stored.sha256, stored.size_bytes
            row.last_used_at = utcnow()
            count(s, self.tenant_id, misses=1)
            s.flush()
            return self._evict(s, keep=key)

        return in_transaction(write)

    def _evict(self, s: Session, keep: str) -> int:
        """Least recently used files out until the tenant's total fits the cap (never `keep`)."""
        mine = TeacherOutput.tenant_id == self.tenant_id
        total = s.scalar(select(func.coalesce(func.sum(TeacherOutput.size_bytes), 0)).where(mine)) or 0
        oldest = s.scalars(
            select(TeacherOutput).where(mine, TeacherOutput.key != keep).order_by(TeacherOutput.last_used_at)
        )
        for row in oldest:
            if total <= self.cap_bytes:
                break
            total -= row.size_bytes
            get_storage().path(row.storage_key).unlink(missing_ok=True)
            s.execute(delete(TeacherOutput).where(mine, TeacherOutput.key == row.key))
            count(s, self.tenant_id, evictions=1)
        return int(total)

    def discard(self, key: str) -> None:
        def forget(s: Session) -> None:
            row = s.get(TeacherOutput, (self.tenant_id, key))
            if row is not None:
                get_storage().path(row.storage_key).unlink(missing_ok=True)
                s.delete(row)
            count(s, self.tenant_id, corrupt=1, hits=-1)

        in_transaction(forget)

    def bypassed(self) -> None:
        in_transaction(lambda s: count(s, self.tenant_id, bypassed=1))
