"""The HTML dashboard: GET / (campaigns), /campaigns/{id}, /contacts/{id}, /automations (every
automation with its latest runs), /automations/runs/{id} (a run); static files at /static.

Pages are rendered on the server (Jinja2, autoescaped) from the same queries as the API; one small
script keeps the summary cards live from GET /api/campaigns/{id}/events and fills the errors
table from /api/campaigns/{id}/stats/errors (hidden while that route does not exist).

Access: exactly when /api needs a key (TEXTPULSE_API_KEY is set or a stored key is live, see
api/auth.py and core/api_keys.py) the dashboard needs one too, since it shows every phone number
and reply; with no key anywhere it is open, like /api. Any live key signs in, named or `env`:
- a browser proves a key once: `GET <any page>?key=<secret>` (a link `textpulse up` can print) or
  the form on the 401 page (POST /login). The answer is a 303 to the same page without the key
  in the URL, setting the cookie `textpulse_dashboard` (HttpOnly, SameSite=Lax, Secure when
  TEXTPULSE_PUBLIC_URL is https, 30 days): a session from `KeyVerifier.start_session`, the key's
  name with an HMAC keyed by its stored hash, never the secret. Every replica checks it from the
  hashes it holds; it stops working when that secret is revoked or its rotation grace ends
  (within TEXTPULSE_API_KEY_REFRESH_SECONDS), and after 30 days. Scripts may send
  `Authorization: Bearer <secret>` instead, as for /api.
- /api takes the same cookie on GET and HEAD (api/auth.py), so the page's script reads the event
  stream and the errors with a plain same-origin fetch(): the page never carries a secret. Pages
  are `no-store`, and a strict Content-Security-Policy (scripts and styles from /static only)
  keeps injected markup from running.
- the CSV export link points to /campaigns/{id}/export.csv, the API's export behind the
  dashboard's sign-in.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import Cookie, State
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, Parameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Stream, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.auth import SESSION_COOKIE, presented_key
from api.clicks import export_rows
from api.dashboard_automations import automations_page, run_page
from api.dashboard_pages import MESSAGE_LOG_ROWS, campaign_page, campaign_rows, contact_page, duration
from api.params import MAX_ID, Id
from core.api_keys import SESSION_SECONDS, KeyVerifier
from core.campaigns.definition import get_campaign
from core.db import session_scope
from core.errors import NotFound

HERE = Path(__file__).parent
CAMPAIGNS_PER_PAGE = 100
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


# -- formatting, shared by the templates (dashboard.js formats live numbers the same way) ---------
def _count(value: Any) -> str:
    return f"{int(value or 0):,}"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


def _money(value: Any) -> str:
    return f"{float(value or 0):,.2f}"


def _when(value: Any) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _signed(points: float) -> str:
    """0.021 → "+2.1", −0.004 → "−0.4" (a typographic minus), 0 → "+0.0"."""
    shown = f"{abs(points) * 100:.1f}"
    return ("−" if points < 0 and shown != "0.0" else "+") + shown


def _uplift(value: Any) -> str:
    """A variant's uplift over the control in words: "+2.1 pts (−0.4 to +4.6), 91 % chance better"."""
    if not value or value.get("absolute") is None:
        return "—"
    text = f"{_signed(value['absolute'])} pts"
    interval = value.get("interval")
    if interval and None not in interval:
        text += f" ({_signed(interval[0])} to {_signed(interval[1])})"
    if value.get("chance_better") is not None:
        text += f", {float(value['chance_better']) * 100:.0f} % chance better"
    return text


def _decision(winner: Any, status: Any = None) -> str:
    """What the A/B decision did, in plain words (its reason is shown beside). Held: the winner's
    `hold` (stored by record_winner since issue 15), or for a winner stored before without it, the
    campaign's status `held` (`status`, the campaign's, when the template passes it)."""
    if not winner:
        return ""
    variant, method = winner.get("variant"), winner.get("method")
    held = bool(winner.get("hold")) or (status == "held" and not variant and method not in ("manual", "bayesian"))
    if method == "manual":
        return f"{variant} was picked by hand and sent to the rest of the audience."
    if method == "bayesian":
        return f"{variant} won: the test showed it is the best variant, so the rest of the audience got it."
    if held:
        return "No winner: the test could not tell the variants apart, so the rest of the audience is held."
    if variant:
        return f"No clear winner: the test could not tell, so the rest of the audience got {variant} as configured."
    return "No clear winner: the test could not tell, so the rest of the audience got every variant by weight."


def _progress(value: Any) -> str:
    """A run's progress (counts the automation chooses) on one line: {"matched": 4, "sent": 4} →
    "matched 4 · sent 4"; nothing yet → "—"."""
    if not value:
        return "—"
    if not isinstance(value, dict):
        return str(value)
    shown = []
    for key, n in value.items():
        number = f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else None
        shown.append(f"{str(key).replace('_', ' ')} {number or json.dumps(n, ensure_ascii=False, default=str)}")
    return " · ".join(shown)


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# What made a campaign row (CampaignKind), in the words of its badge; a plugin's kind as it is.
KIND_WORDS = {"campaign": "campaign", "follow_up": "follow-up", "automation": "automation"}


def _kind(value: Any) -> str:
    return KIND_WORDS.get(str(value), str(value))


# A bot verdict's reasons in words (docs/bots.md); an unknown one (a plugin's) shows as it is.
REASON_WORDS = {
    "head_request": "HEAD request (a link checker's probe)",
    "no_user_agent": "no user agent",
    "bot_user_agent": "a crawler's or an HTTP library's user agent",
    "too_fast": "clicked too soon after delivery for a person",
    "bot_network": "from a scanner's or crawler's network",
    "cloud_network": "from a data centre (a cloud's compute network)",
    "prefetch": "a prefetch or preview header",
    "burst": "burst: several recipients' links within a second from one network",
    "all_links": "several links of one message within seconds",
}


def _reason(code: Any) -> str:
    """`bot_user_agent:google_messages` → "user agent of google messages", `burst` → its words."""
    code = str(code)
    if code in REASON_WORDS:
        return REASON_WORDS[code]
    kind, _, name = code.partition(":")
    if kind == "bot_user_agent" and name:
        return f"user agent of {name.replace('_', ' ')}"
    return code


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        count=_count,
        pct=_pct,
        money=_money,
        when=_when,
        uplift=_uplift,
        decision=_decision,
        reason=_reason,
        progress=_progress,
        pretty_json=_pretty_json,
        kind=_kind,
        duration=duration,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def _page(name: str, status_code: int = 200, **context: Any) -> Template:
    return Template(name, context=context, status_code=status_code, headers=PAGE_HEADERS)


# -- access ---------------------------------------------------------------------------------------
def _local(target: str | None) -> str:
    """Where to go after the key was accepted: a path on this site, nothing else (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _verifier(request: Request[Any, Any, Any]) -> KeyVerifier:
    verifier: KeyVerifier = request.app.state.api_keys
    return verifier


def _key_page(verifier: KeyVerifier, target: str, *, wrong: bool) -> Template:
    """The key form, 401; 503 while the stored keys cannot be read (a secret may be one of them)."""
    if not verifier.loaded:
        return _page("key.html", 503, next=_local(target), wrong=False, unavailable=True)
    return _page("key.html", 401, next=_local(target), wrong=wrong, unavailable=False)


def _sign_in(request: Request[Any, Any, Any], secret: str, target: str) -> Response[Any]:
    """The 303 back to `target` with the session cookie, for the secret of a live key; else the key
    page again."""
    verifier = _verifier(request)
    session = verifier.start_session(secret)
    if session is None:
        return _key_page(verifier, target, wrong=True)
    cookie = Cookie(
        key=SESSION_COOKIE,
        value=session,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.public_url.startswith("https://"),
        max_age=SESSION_SECONDS,
    )
    return Redirect(_local(target), status_code=303, cookies=[cookie], headers=PAGE_HEADERS)


async def require_key(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """before_request of every page: None lets the page render; else the answer to send instead."""
    verifier = _verifier(request)
    if not verifier.required:
        return None
    offered = request.query_params.get("key")
    if offered is not None:
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
        return _sign_in(request, offered, request.url.path + (f"?{urlencode(rest)}" if rest else ""))
    if presented_key(verifier, request, session=True) is not None:
        return None
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _key_page(verifier, asked, wrong=False)


@post("/login", include_in_schema=False, status_code=303)
async def login(
    request: Request[Any, Any, Any], data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Response[Any]:
    """The key form of the 401 page: on a live key, back to the page asked for, with the cookie."""
    target = _local(data.get("next"))
    if not _verifier(request).required:
        return Redirect(target, status_code=303)
    return _sign_in(request, data.get("key", ""), target)


def _not_found(_request: Request[Any, Any, Any], exc: Exception) -> Template:
    return _page("not_found.html", 404, detail=str(getattr(exc, "detail", None) or exc))


class DashboardController(Controller):
    path = "/"
    include_in_schema = False
    before_request = staticmethod(require_key)
    exception_handlers = {NotFound: _not_found, NotFoundException: _not_found}

    @get("/", sync_to_thread=True)
    def campaigns(self, state: State, before: int | None = Parameter(default=None, ge=1, le=MAX_ID)) -> Template:
        """Every campaign, newest first, with its status, sent, delivered and CTR."""
        with session_scope(state.engine, read_only=True) as session:
            rows, more = campaign_rows(session, state.registry, before=before, limit=CAMPAIGNS_PER_PAGE)
        return _page(
            "campaigns.html",
            campaigns=rows,
            older=rows[-1]["id"] if more else None,
            newest=before is None,
        )

    @get("/campaigns/{campaign_id:int}", sync_to_thread=True)
    def campaign(self, state: State, campaign_id: Id) -> Template:
        """Summary cards (live), variants, links, errors, devices, click timing, trend, message log;
        a held campaign's "pick a winner" hint and the messages awaiting a delivery report."""
        page = campaign_page(state.engine, state.registry, campaign_id)
        return _page(
            "campaign.html",
            key_required=state.api_keys.required,  # the curl lines of "pick a winner" send a key
            log_rows=MESSAGE_LOG_ROWS,
            public_url=state.settings.public_url,  # the curl lines of a held campaign's "pick a winner"
            **page,
        )

    @get("/campaigns/{campaign_id:int}/export.csv", sync_to_thread=True)
    def export(self, state: State, campaign_id: Id) -> Stream:
        """GET /api/campaigns/{id}/export.csv for the browser, behind the dashboard's sign-in."""
        with session_scope(state.engine, read_only=True) as session:
            get_campaign(session, campaign_id)
        return Stream(
            export_rows(state.engine, campaign_id),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
        )

    @get("/contacts/{contact_id:int}", sync_to_thread=True)
    def contact(self, state: State, contact_id: Id) -> Template:
        """The contact with its messages, clicks, replies and conversions, newest first."""
        return _page("contact.html", **contact_page(state.engine, contact_id))

    @get("/automations", sync_to_thread=True)
    def automations(self, state: State) -> Template:
        """Every registered automation (name, description, triggers) with its latest runs."""
        return _page("automations.html", **automations_page(state.engine, state.registry))

    @get("/automations/runs/{run_id:int}", sync_to_thread=True)
    def run(self, state: State, run_id: Id) -> Template:
        """One run: status, params, progress, its contact, the campaign it is about and its campaigns."""
        return _page("run.html", **run_page(state.engine, state.registry, run_id))


def dashboard_router() -> Router:
    """The pages, the key form and /static, for create_app's route handlers."""
    static = create_static_files_router(path="/static", directories=[HERE / "static"], include_in_schema=False)
    return Router(path="/", route_handlers=[DashboardController, login, static])
