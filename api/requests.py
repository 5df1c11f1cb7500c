"""The request class of the app: a body that cannot be read as JSON is the client's error.

Litestar turns msgspec's `DecodeError` into a 400, but two other failures of reading a JSON body
escape it and would answer 500: bytes that are not UTF-8 (`UnicodeDecodeError`) and arrays or
objects nested past the decoder's recursion limit (`RecursionError`). Both come only from the body
here, so both are a 400 that says what is wrong; nothing is stored.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException


class TextpulseRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8: JSON must be UTF-8") from None
        except RecursionError:
            raise ClientException("the request body's JSON is nested too deeply") from None
