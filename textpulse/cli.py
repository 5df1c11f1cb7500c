"""`textpulse`: up | api | worker | migrate | rescore | stats | workflows | keys.

Every command ends with `os._exit(status)` after flushing: a process that used temporalio can
abort at interpreter exit (temporalio/sdk-python#300) and must not turn success into a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from core.log import configure_logging, get_logger
from core.settings import Settings, SettingsError
from textpulse.keys_cli import add_keys_parser

log = get_logger("textpulse.cli")


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from core.migrate import downgrade, upgrade

    if args.revision.startswith("-") or args.revision == "base":
        downgrade(settings.database_url, args.revision)
    else:
        upgrade(settings.database_url, args.revision)
    log.info("database migrated", revision=args.revision, database=_safe_url(settings.database_url))
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _serve(settings: Settings, *, run_api: bool, run_worker: bool, embedded_temporal: bool) -> int:
    from textpulse.up import serve  # the server stack is imported only by the commands that run it

    return asyncio.run(serve(settings, run_api=run_api, run_worker=run_worker, embedded_temporal=embedded_temporal))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from core.migrate import upgrade

    upgrade(settings.database_url)
    return _serve(settings, run_api=True, run_worker=True, embedded_temporal=settings.embedded_temporal)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    return _serve(settings, run_api=True, run_worker=False, embedded_temporal=False)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    return _serve(settings, run_api=False, run_worker=True, embedded_temporal=False)


def cmd_rescore(settings: Settings, args: argparse.Namespace) -> int:
    """Judge every stored click of a campaign again with the bot filters configured now; prints
    `{"clicks", "changed", "bots", "humans"}`."""
    from core.campaigns.definition import CampaignNotFound
    from core.db import make_engine
    from core.hooks.registry import load_plugins
    from core.tracking.rescore import rescore_campaign

    registry = load_plugins(settings)
    engine = make_engine(settings.database_url)
    try:
        result = rescore_campaign(
            engine, args.campaign, registry.bot_filters, registry.together_filters, chunk=args.chunk
        )
    except CampaignNotFound as exc:
        print(f"textpulse rescore: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
        registry.close()
    print(json.dumps(result))
    return 0


def cmd_workflows(settings: Settings, args: argparse.Namespace) -> int:
    """The automations through the running service's HTTP API (textpulse/workflows_cli.py)."""
    from textpulse.workflows_cli import main as workflows_main

    return int(workflows_main(settings, args))


def _add_workflows(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the service's base URL (default: TEXTPULSE_PUBLIC_URL or http://HOST:PORT)")
    workflows = sub.add_parser("workflows", help="list automations, start, list, show and cancel their runs (HTTP)")
    workflows.set_defaults(func=cmd_workflows)
    commands = workflows.add_subparsers(dest="workflows_command", required=True)
    listing = commands.add_parser("list", parents=[common], help="the registered automations")
    listing.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    run = commands.add_parser("run", parents=[common], help="start a run of an automation; prints the run")
    run.add_argument("name", help="the automation's name (see `textpulse workflows list`)")
    run.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a param (repeatable); VALUE is JSON when it parses"
    )
    run.add_argument("--params", metavar="JSON", help="params as a JSON object (each --param wins over it)")
    run.add_argument("--wait", action="store_true", help="wait for the run to end; exit 1 unless it completed")
    runs = commands.add_parser("runs", parents=[common], help="the runs by id, oldest first")
    runs.add_argument("--workflow", help="only runs of this automation")
    runs.add_argument("--status", help="only runs in this status (running, completed, cancelled, failed)")
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    runs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    show = commands.add_parser("show", parents=[common], help="one run as JSON")
    show.add_argument("run_id", type=int)
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a running run; prints the run")
    cancel.add_argument("run_id", type=int)


def cmd_stats_recount(settings: Settings, args: argparse.Namespace) -> int:
    """Recount a campaign's message and click numbers from its rows and write them over its tally
    (core/stats/tallies.py `repair`); prints `{"campaign_id", "kept", "recounted", "changed"}`."""
    from dataclasses import asdict

    from core.campaigns.definition import CampaignNotFound, get_campaign
    from core.db import make_engine, session_scope
    from core.stats.tallies import repair

    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            get_campaign(session, args.campaign)
            kept, recounted = repair(session, args.campaign)
    except CampaignNotFound as exc:
        print(f"textpulse stats recount: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    changed = {
        name: [value, asdict(recounted)[name]]
        for name, value in asdict(kept).items()
        if value != asdict(recounted)[name]
    }
    print(
        json.dumps(
            {"campaign_id": args.campaign, "kept": asdict(kept), "recounted": asdict(recounted), "changed": changed}
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textpulse", description="Self-hosted SMS campaign engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="migrate, then start everything on embedded defaults (Temporal dev server, worker, API)"
    ).set_defaults(func=cmd_up)
    sub.add_parser("api", help="start the API server only (Temporal at TEXTPULSE_TEMPORAL_ADDRESS)").set_defaults(
        func=cmd_api
    )
    sub.add_parser("worker", help="start a Temporal worker only").set_defaults(func=cmd_worker)
    migrate = sub.add_parser("migrate", help="apply database migrations (or go back: `migrate base`)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)
    rescore = sub.add_parser("rescore", help="judge a campaign's stored clicks again with the current bot filters")
    rescore.add_argument("--campaign", type=int, required=True, help="the campaign's id")
    rescore.add_argument("--chunk", type=int, default=5000, help="clicks read and judged at a time (5000)")
    rescore.set_defaults(func=cmd_rescore)
    stats = sub.add_parser("stats", help="campaign numbers kept by the database")
    stats_commands = stats.add_subparsers(dest="stats_command", required=True)
    recount = stats_commands.add_parser("recount", help="recount a campaign's tally from its messages and clicks")
    recount.add_argument("--campaign", type=int, required=True, help="the campaign's id")
    recount.set_defaults(func=cmd_stats_recount)
    _add_workflows(sub)
    add_keys_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"textpulse: {exc}", file=sys.stderr)
        os._exit(2)
    configure_logging(settings.log_format)
    try:
        status = args.func(settings, args)
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:
        log.exception("textpulse failed", error=str(exc))
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
