"""structlog set up once: console renderer on a terminal, JSON otherwise or when asked; secrets
and whole phone numbers masked on every line (core/log_masking.py)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from core.log_masking import LogMasker

_configured = False


def masking_phones_from_env() -> bool:
    """TEXTPULSE_LOG_MASK_PHONES, read here because logging is set up before (or without) the
    Settings; anything but false/0/no/off keeps the masking on."""
    raw = os.environ.get("TEXTPULSE_LOG_MASK_PHONES", "")
    return raw.strip().lower() not in ("false", "0", "no", "off")


def configure_logging(
    log_format: str | None = None, level: int = logging.INFO, *, mask_phones: bool | None = None
) -> None:
    """Route structlog and the standard library (temporalio, uvicorn) through one renderer.
    `mask_phones`: None reads TEXTPULSE_LOG_MASK_PHONES (default true); secrets are always masked."""
    global _configured
    if _configured:
        return
    _configured = True
    use_json = log_format == "json" or (log_format is None and not sys.stderr.isatty())
    masker = LogMasker(mask_phones=masking_phones_from_env() if mask_phones is None else mask_phones)
    # Last of the shared chain: structlog's lines are masked before the standard library sees them
    # (any handler), foreign lines (uvicorn, temporalio, httpx) in the formatter's pre-chain.
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        masker,
    ]
    renderer: structlog.types.Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks, not Rich's: Rich colours the digits of a number inside the text (its
        # escape codes would hide a phone from the masking) and prints each frame's locals (an
        # auth token passed as an argument among them).
        console = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        console.exception_formatter = masker.exception_formatter(console.exception_formatter)
        renderer = console
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # The text of a traceback exists only once formatted: masked then (the console renderer
    # formats its own, masked by its exception_formatter above).
    exceptions: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, masker.mask_exception] if use_json else []
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every log line of this context (a request, an activity) carries `fields`; the ones that are
    None are left out. Unbound on the way out, whatever happens inside."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield
