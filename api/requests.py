"""The request class of the app: a body that cannot be read as JSON is the client's error.

Litestar turns msgspec's `DecodeError` into a 400, but two other failures of reading a JSON body
escape it and would answer 500: bytes that are not UTF-8 (`UnicodeDecodeError`) and arrays or
objects nested past the decoder's recursion limit (`RecursionError`). Both come only from the body
here, so both are a 400 that says what is wrong; nothing is stored.

A NUL character (`\\u0000` in JSON, `%00` in a query string) is refused the same way: no text a
marketer sends holds one, and PostgreSQL's text columns cannot store it. The body is searched for
the escape first (one scan of the bytes), and only a body that has it is walked.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException


class TextpulseRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        try:
            value = await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8: JSON must be UTF-8") from None
        except RecursionError:
            raise ClientException("the request body's JSON is nested too deeply") from None
        if b"\\u0000" in await self.body() and _holds_nul(value):
            raise ClientException("the request body holds a NUL character (\\u0000), which no field takes")
        return value


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def refuse_nul_in_query(request: Request[Any, Any, Any]) -> None:
    """A 400 for a query string holding a NUL character (percent-encoded: a raw one ends the
    request line before it gets here)."""
    if b"%00" in request.scope["query_string"]:
        raise ClientException("the query string holds a NUL character (%00), which no parameter takes")
