"""`textpulse workflows list | run NAME | runs | show RUN_ID | cancel RUN_ID` (API.md "Automations").

An HTTP client of the running service's /api/workflows routes: the service starts runs on
Temporal, so this needs no Temporal of its own. Exit statuses: 0 done; 1 a waited-for run ended
other than completed, or the service failed (5xx); 2 the service refused the request (4xx) or the
arguments are wrong; 3 the service cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from core.settings import Settings

POLL_SECONDS = 0.5
PAGE_LIMIT = 1000  # the most GET /api/workflows/runs returns at a time


class CommandFailed(Exception):
    """Ends the command: `message` goes to stderr, `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class WorkflowsApi:
    """The /api/workflows routes; every answer that is not a 2xx raises `CommandFailed`."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, f"/api/workflows{path}", **kwargs)
        except httpx.TransportError as exc:  # refused, DNS, timeouts, a dropped connection
            raise CommandFailed(
                f"error: cannot reach Textpulse at {self.url}: {str(exc) or type(exc).__name__}", 3
            ) from None
        except httpx.InvalidURL as exc:
            raise CommandFailed(f"error: {self.url} is not a URL: {exc}", 2) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CommandFailed(f"error: {self.url} did not answer JSON; is it Textpulse?", 1) from None
        raise CommandFailed(_refusal(response), 2 if response.is_client_error else 1)

    def automations(self) -> dict[str, Any]:
        return dict(self.call("GET", ""))

    def start(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/{quote(name, safe='')}/runs", json={"params": params}))

    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/runs/{run_id}"))

    def cancel(self, run_id: int) -> dict[str, Any]:
        return dict(self.call("POST", f"/runs/{run_id}/cancel"))

    def runs(self, *, workflow: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` runs, by id, following the `next` cursor."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < limit:
            query = {
                "workflow": workflow,
                "status": status,
                "cursor": cursor,
                "limit": min(limit - len(found), PAGE_LIMIT),
            }
            page = self.call("GET", "/runs", params={k: v for k, v in query.items() if v is not None})
            found += page["items"]
            cursor = page.get("next")
            if not cursor or not page["items"]:
                break
        return found[:limit]


def _refusal(response: httpx.Response) -> str:
    """`error: <detail>` and a line per item of the Litestar error's `extra`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "detail" not in body:
        text = response.text.strip()[:500] or response.reason_phrase
        return f"error: {response.status_code} {text}"
    lines = [f"error: {body['detail']}"]
    extra = body.get("extra")
    items: Iterable[Any] = extra.items() if isinstance(extra, dict) else extra if isinstance(extra, list) else ()
    for item in items:
        if isinstance(item, tuple):  # a dict's (key, value)
            lines.append(f"  {item[0]}: {item[1]}")
        elif isinstance(item, dict) and "message" in item:
            key = item.get("key")
            lines.append(f"  {key}: {item['message']}" if key else f"  {item['message']}")
        else:
            lines.append(f"  {item}")
    if isinstance(extra, str) and extra:
        lines.append(f"  {extra}")
    return "\n".join(lines)


def _value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, null, lists, objects, quoted strings), else the text."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN / Infinity: the text itself


def parse_params(params_json: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    """`--params '{...}'` merged with each `--param KEY=VALUE` (which win)."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json, parse_constant=_no_constant)
        except ValueError as exc:
            raise CommandFailed(f"error: --params is not JSON: {exc}", 2) from None
        if not isinstance(loaded, dict):
            raise CommandFailed("error: --params must be a JSON object", 2)
        params.update(loaded)
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key:
            raise CommandFailed(f"error: --param {pair!r}: expected KEY=VALUE", 2)
        params[key] = _value(text)
    return params


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = list(rows)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in [list(header), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _progress(progress: Any) -> str:
    if isinstance(progress, dict) and progress:
        return " ".join(f"{k}={v}" for k, v in progress.items())
    return "-" if not progress else json.dumps(progress)


def cmd_list(api: WorkflowsApi, args: argparse.Namespace) -> int:
    answer = api.automations()
    if args.json:
        _print_json(answer)
        return 0
    _table(
        ("NAME", "TRIGGERS", "DESCRIPTION"),
        (
            (a["name"], ",".join(a.get("triggers") or []) or "-", (a.get("description") or "").strip().split("\n")[0])
            for a in answer["items"]
        ),
    )
    return 0


def cmd_run(api: WorkflowsApi, args: argparse.Namespace) -> int:
    run = api.start(args.name, parse_params(args.params, args.param or []))
    if not args.wait:
        _print_json(run)
        return 0
    print(f"run {run['id']} of {run['workflow']} started; waiting for it to end", file=sys.stderr)
    while run["status"] == "running":
        time.sleep(POLL_SECONDS)
        run = api.run(run["id"])
    _print_json(run)
    return 0 if run["status"] == "completed" else 1


def cmd_runs(api: WorkflowsApi, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandFailed("error: --limit must be 1 or more", 2)
    found = api.runs(workflow=args.workflow, status=args.status, limit=args.limit)
    if args.json:
        _print_json(found)
        return 0
    _table(
        ("ID", "WORKFLOW", "STATUS", "STARTED_AT", "CAMPAIGN_IDS", "PROGRESS"),
        (
            (
                str(r["id"]),
                r["workflow"],
                r["status"],
                r.get("started_at") or "-",
                ",".join(str(c) for c in r.get("campaign_ids") or []) or "-",
                _progress(r.get("progress")),
            )
            for r in found
        ),
    )
    return 0


def cmd_show(api: WorkflowsApi, args: argparse.Namespace) -> int:
    _print_json(api.run(args.run_id))
    return 0


def cmd_cancel(api: WorkflowsApi, args: argparse.Namespace) -> int:
    _print_json(api.cancel(args.run_id))
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "runs": cmd_runs, "show": cmd_show, "cancel": cmd_cancel}


def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run `textpulse workflows <args.workflows_command>`; the exit status."""
    url = args.url or settings.public_url
    try:
        api = WorkflowsApi(url, settings.api_key)
    except httpx.InvalidURL as exc:
        print(f"error: {url} is not a URL: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.workflows_command](api, args)
    except CommandFailed as failure:
        print(str(failure), file=sys.stderr)
        return failure.status
    finally:
        api.close()
