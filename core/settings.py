"""Settings read once from the environment (names in API.md, "Process and configuration")."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names it."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
    if not value >= 0:  # NaN too
        raise SettingsError(f"{name} must be zero or more, got {raw!r}")
    return value


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {env.get(name)!r}")


def _frequency_cap(env: dict[str, str]) -> tuple[int, float] | None:
    """`N/SECONDS`: at most N messages to a contact in any SECONDS (API.md "Frequency cap")."""
    name = "TEXTPULSE_FREQUENCY_CAP"
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    return _per_seconds(name, raw, "3/86400")


def _rate_limit(env: dict[str, str], name: str, default: tuple[int, float]) -> tuple[int, float] | None:
    """`N/SECONDS`: a client's burst of N requests, refilled at N per SECONDS; `off`: no limit."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() == "off":
        return None
    return _per_seconds(name, raw, "100/1 (or off)")


def _per_seconds(name: str, raw: str, example: str) -> tuple[int, float]:
    count_text, slash, seconds_text = raw.partition("/")
    try:
        count, seconds = int(count_text), float(seconds_text)
    except ValueError:
        count, seconds = 0, 0.0
    if not slash or count < 1 or not 0 < seconds < float("inf"):  # NaN fails too
        raise SettingsError(
            f"{name} must be N/SECONDS (N a whole number >= 1, SECONDS > 0), e.g. {example}; got {raw!r}"
        )
    return count, seconds


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise SettingsError(f"TEXTPULSE_TRUSTED_PROXIES: {part!r} is not a CIDR") from exc
    return tuple(nets)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    temporal_address: str | None
    temporal_namespace: str
    temporal_port: int
    temporal_ui_port: int
    http_host: str
    http_port: int
    public_url: str
    api_key: str | None
    config_path: Path
    log_format: str | None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())
    # Phone numbers masked in log lines (core/log_masking.py); core.log reads the variable itself,
    # since logging starts before the Settings: this field is its check and its documentation.
    log_mask_phones: bool = True
    task_queue: str = "textpulse"
    batch_size: int = 1000
    max_concurrent_batches: int = 4
    send_timeout_seconds: int = 300  # one send activity, start to close (the heartbeat timeout is apart)
    # At most (count, seconds): messages handed to the provider for one contact in any window of
    # that many seconds, across campaigns and automations (test sends excepted); None: no cap.
    frequency_cap: tuple[int, float] | None = None
    # Requests from one client IP to /api and to /webhooks/...: (burst, seconds to refill it), per
    # API process (api/rate_limit.py); None: not limited. /r/... is never limited.
    rate_limit_api: tuple[int, float] | None = (100, 1.0)
    rate_limit_webhooks: tuple[int, float] | None = (50_000, 1.0)
    # A worker silent this long is presumed dead: its batch goes to another worker.
    heartbeat_timeout_seconds: float = 20
    control_timeout_seconds: float = 5  # how long pause/resume/cancel wait for the workflow to answer
    ab_poll_seconds: int = 60  # how often a waiting A/B test is looked at (it ends early when decisive)
    # The redirect's cache of short codes: its size, how far back codes of sent messages are loaded
    # at start (hours; 0: none), how often codes of messages sent since are fetched (s; 0: never).
    redirect_cache_size: int = 200_000
    redirect_preload_hours: float = 48
    redirect_refresh_seconds: float = 2
    # Two installations sharing one Temporal namespace keep their workflow ids apart with this.
    workflow_id_prefix: str = "campaign-"
    # After sending, a message still without a delivery report this long (s) is looked up at its
    # provider (the provider's `fetch_status` ability).
    status_settle_seconds: float = 900
    # A wait of an automation for a campaign's end looks at it this often (s), should the signal
    # of its end be lost with a process that died.
    automation_poll_seconds: float = 60
    # Like `workflow_id_prefix`, for automation runs' workflow ids (`automation-<name>-…`).
    automation_id_prefix: str = "automation-"
    # How often the worker closes the rows of automation runs whose workflow ended unrecorded
    # (terminated in Temporal, timed out): workflows/run_sweep.py.
    run_sweep_seconds: float = 300
    # How often each API process reads the API keys again (core/api_keys.py): a key created,
    # rotated or revoked from the CLI counts in every process within that many seconds.
    api_key_refresh_seconds: float = 5

    def automation_id(self, name: str, rest: str) -> str:
        return f"{self.automation_id_prefix}{name}-{rest}"

    def workflow_id(self, campaign_id: int) -> str:
        return f"{self.workflow_id_prefix}{campaign_id}"

    @property
    def embedded_temporal(self) -> bool:
        """True when no cluster is configured and `textpulse up` starts the dev server."""
        return not self.temporal_address

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("TEXTPULSE_DATA_DIR") or "var")
        host = env.get("TEXTPULSE_HTTP_HOST") or "127.0.0.1"
        port = _int(env, "TEXTPULSE_HTTP_PORT", 8000)
        log_format = env.get("TEXTPULSE_LOG_FORMAT") or None
        if log_format not in (None, "console", "json"):
            raise SettingsError(f"TEXTPULSE_LOG_FORMAT must be 'console' or 'json', got {log_format!r}")
        database_url = env.get("TEXTPULSE_DATABASE_URL") or f"sqlite:///{(data_dir / 'textpulse.db')}"
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            temporal_address=env.get("TEXTPULSE_TEMPORAL_ADDRESS") or None,
            temporal_namespace=env.get("TEXTPULSE_TEMPORAL_NAMESPACE") or "default",
            temporal_port=_int(env, "TEXTPULSE_TEMPORAL_PORT", 7233),
            temporal_ui_port=_int(env, "TEXTPULSE_TEMPORAL_UI_PORT", 8233),
            http_host=host,
            http_port=port,
            public_url=(env.get("TEXTPULSE_PUBLIC_URL") or f"http://{host}:{port}").rstrip("/"),
            api_key=env.get("TEXTPULSE_API_KEY") or None,
            api_key_refresh_seconds=_float(env, "TEXTPULSE_API_KEY_REFRESH_SECONDS", 5) or 5,
            config_path=Path(env.get("TEXTPULSE_CONFIG") or "plugins.toml"),
            log_format=log_format,
            log_mask_phones=_flag(env, "TEXTPULSE_LOG_MASK_PHONES", True),
            trusted_proxies=_networks(env.get("TEXTPULSE_TRUSTED_PROXIES") or ""),
            task_queue=env.get("TEXTPULSE_TASK_QUEUE") or "textpulse",
            batch_size=_int(env, "TEXTPULSE_BATCH_SIZE", 1000),
            max_concurrent_batches=_int(env, "TEXTPULSE_MAX_CONCURRENT_BATCHES", 4),
            send_timeout_seconds=_int(env, "TEXTPULSE_SEND_TIMEOUT_SECONDS", 300),
            frequency_cap=_frequency_cap(env),
            rate_limit_api=_rate_limit(env, "TEXTPULSE_RATE_LIMIT_API", (100, 1.0)),
            rate_limit_webhooks=_rate_limit(env, "TEXTPULSE_RATE_LIMIT_WEBHOOKS", (50_000, 1.0)),
            heartbeat_timeout_seconds=_float(env, "TEXTPULSE_HEARTBEAT_TIMEOUT_SECONDS", 20),
            control_timeout_seconds=_float(env, "TEXTPULSE_CONTROL_TIMEOUT_SECONDS", 5),
            ab_poll_seconds=_int(env, "TEXTPULSE_AB_POLL_SECONDS", 60),
            workflow_id_prefix=env.get("TEXTPULSE_WORKFLOW_ID_PREFIX") or "campaign-",
            redirect_cache_size=max(_int(env, "TEXTPULSE_REDIRECT_CACHE_SIZE", 200_000), 0),
            redirect_preload_hours=_float(env, "TEXTPULSE_REDIRECT_PRELOAD_HOURS", 48),
            redirect_refresh_seconds=_float(env, "TEXTPULSE_REDIRECT_REFRESH_SECONDS", 2),
            status_settle_seconds=_float(env, "TEXTPULSE_STATUS_SETTLE_SECONDS", 900),
            automation_poll_seconds=_float(env, "TEXTPULSE_AUTOMATION_POLL_SECONDS", 60),
            automation_id_prefix=env.get("TEXTPULSE_AUTOMATION_ID_PREFIX") or "automation-",
            run_sweep_seconds=_float(env, "TEXTPULSE_RUN_SWEEP_SECONDS", 300) or 300,
        )
