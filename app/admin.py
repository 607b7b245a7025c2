"""Admin command: tenants and API keys, straight on the database.

    python -m app.admin create-tenant acme [--max-concurrent-jobs 4]
    python -m app.admin create-key acme [--name ci]     # prints the key once
    python -m app.admin list-keys [acme]
    python -m app.admin revoke-key KEY_ID

Uses the same settings as the service (DISTILL_DATABASE_URL, DISTILL_HOME).
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import select

from app import tenants
from app.db import get_sessionmaker
from app.models import ApiKey, Tenant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.admin", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create-tenant", help="create a tenant")
    p.add_argument("name")
    p.add_argument("--max-concurrent-jobs", type=int)
    p = sub.add_parser("create-key", help="create an API key for a tenant (created if missing)")
    p.add_argument("tenant", help="tenant name or id")
    p.add_argument("--name", help="a label for the key")
    p = sub.add_parser("list-keys", help="keys by prefix (the keys themselves are not stored)")
    p.add_argument("tenant", nargs="?")
    p = sub.add_parser("revoke-key", help="revoke a key by id")
    p.add_argument("key_id")
    args = parser.parse_args(argv)

    with get_sessionmaker()() as session:
        if args.command == "create-tenant":
            try:
                tenant = tenants.create_tenant(session, args.name, args.max_concurrent_jobs)
            except tenants.TenantExists as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            session.commit()
            print(f"tenant {tenant.name} {tenant.id}")
        elif args.command == "create-key":
            tenant = tenants.find_tenant(session, args.tenant) or tenants.create_tenant(session, args.tenant)
            new = tenants.create_key(session, tenant, args.name)
            session.commit()
            print(
                f"API key for tenant {tenant.name} (id {new.record.id}); shown once, keep it secret:", file=sys.stderr
            )
            print(new.key)
        elif args.command == "list-keys":
            query = select(ApiKey, Tenant.name).join(Tenant).order_by(Tenant.name, ApiKey.created_at)
            if args.tenant:
                query = query.where((Tenant.name == args.tenant) | (Tenant.id == args.tenant))
            for key, tenant_name in session.execute(query):
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"{key.id}  {key.prefix}...  {tenant_name}  {state}  {key.name or ''}")
        elif args.command == "revoke-key":
            if tenants.revoke_key(session, args.key_id) is None:
                print(f"error: no key {args.key_id!r}", file=sys.stderr)
                return 1
            session.commit()
            print(f"revoked {args.key_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
