"""Errors as HTTP answers, decided in one place.

Every error the domain raises for a refused request derives from `core.errors.TextpulseError`;
its kind says which 4xx it is. A provider plugin's `WebhookError` names its own status. The body
is Litestar's own error shape: `{"status_code", "detail", "extra"}`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from core.errors import BadParameter, Conflict, Invalid, NotFound, TextpulseError, Unavailable
from core.hooks.contracts import WebhookError
from core.log import get_logger

log = get_logger("textpulse.api")

STATUS_OF_KIND: tuple[tuple[type[TextpulseError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (BadParameter, 400),
    (Unavailable, 503),
)


def error_response(status: int, detail: str, extra: Any = None) -> Response[dict[str, Any]]:
    return Response({"status_code": status, "detail": detail, "extra": extra}, status_code=status)


def status_of(exc: TextpulseError) -> int:
    for kind, status in STATUS_OF_KIND:
        if isinstance(exc, kind):
            return status
    return 400


def domain_error(_request: Request[Any, Any, Any], exc: TextpulseError) -> Response[dict[str, Any]]:
    return error_response(status_of(exc), str(exc), exc.extra)


def webhook_error(_request: Request[Any, Any, Any], exc: WebhookError) -> Response[dict[str, Any]]:
    return error_response(exc.status_code, exc.detail)


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A bug, never the client's fault: logged with its traceback (the request's method and path
    are in the log context), answered with Litestar's plain 500 body and nothing more."""
    log.error("unhandled error", error=type(exc).__name__, exc_info=exc)
    return error_response(500, "Internal Server Error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    TextpulseError: domain_error,
    WebhookError: webhook_error,
    500: internal_error,  # any exception that is not an HTTPException (Litestar's lookup)
}
