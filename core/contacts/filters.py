"""Attribute filters: which contacts an audience `{"attributes": {...}}` takes in.

Every wanted key must match: a list means any of its values, anything else that exact value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def attributes_match(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        have = attributes.get(key)
        if isinstance(value, list):
            if have not in value:
                return False
        elif have != value:
            return False
    return True
