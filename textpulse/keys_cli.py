"""`textpulse keys create NAME | rotate NAME [--grace SECONDS] | revoke NAME | list [--json]`
(README.md "API keys").

Works on the database itself (TEXTPULSE_DATABASE_URL, like `textpulse migrate`), not through the
API: it is how the first key is made. Every API process sees a change within
TEXTPULSE_API_KEY_REFRESH_SECONDS. A new secret goes to stdout alone (`KEY=$(textpulse keys create
ci)`), what to know about it to stderr. Exit statuses: 0 done; 2 refused (an unknown or bad name, a
name that exists); 1 the database failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SHOWN_ONCE = "This is the only time this secret is shown: store it now (only its hash is kept)."


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, rotate, revoke and list the API keys (on the database)")
    keys.set_defaults(func=main)
    commands = keys.add_subparsers(dest="keys_command", required=True)
    create = commands.add_parser("create", help="a new key; prints its secret, once")
    create.add_argument("name", help="1 to 64 of a-z 0-9 _ . - (e.g. ci, shop.prod)")
    rotate = commands.add_parser("rotate", help="a new secret for a key; prints it, once")
    rotate.add_argument("name")
    rotate.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the old secret keeps working (default 3600; 0: it stops at once)",
    )
    revoke = commands.add_parser("revoke", help="end every secret of a key now")
    revoke.add_argument("name")
    listing = commands.add_parser("list", help="the live keys: name, prefix, created, expires, last used")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [list(header), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _run(engine: Engine, args: argparse.Namespace) -> int:
    from core import api_keys

    if args.keys_command == "create":
        secret = api_keys.create(engine, args.name)
        print(secret)
        print(f"API key {args.name!r} created. {SHOWN_ONCE}", file=sys.stderr)
    elif args.keys_command == "rotate":
        grace = api_keys.DEFAULT_GRACE_SECONDS if args.grace is None else args.grace
        secret = api_keys.rotate(engine, args.name, grace)
        print(secret)
        ends = (datetime.now(UTC) + timedelta(seconds=grace)).isoformat(timespec="seconds")
        old = f"works until {ends} ({grace:g} s)" if grace > 0 else "stopped working"
        print(f"API key {args.name!r} rotated; its old secret {old}. {SHOWN_ONCE}", file=sys.stderr)
    elif args.keys_command == "revoke":
        ended = api_keys.revoke(engine, args.name)
        print(f"API key {args.name!r} revoked ({ended} secret{'s' if ended > 1 else ''}).", file=sys.stderr)
        if not api_keys.list_keys(engine):
            print("No API key is left: /api is open unless TEXTPULSE_API_KEY is set.", file=sys.stderr)
    else:
        keys = api_keys.list_keys(engine)
        rows = [
            {
                "name": k.name,
                "prefix": k.prefix,
                "created_at": _iso(k.created_at),
                "expires_at": _iso(k.expires_at),
                "last_used_at": _iso(k.last_used_at),
            }
            for k in keys
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            header = ("NAME", "PREFIX", "CREATED_AT", "EXPIRES_AT", "LAST_USED_AT")
            _table(header, [[row[h.lower()] or "-" for h in header] for row in rows])
    return 0


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run `textpulse keys <args.keys_command>`; the exit status."""
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import make_engine
    from core.errors import TextpulseError

    engine = make_engine(settings.database_url)
    try:
        return _run(engine, args)
    except TextpulseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]  # not the SQL that follows
        print(f"error: the database failed (is it migrated? `textpulse migrate`): {first_line}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
