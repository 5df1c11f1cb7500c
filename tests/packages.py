"""Example packages (examples/) pip-installed into the venv as a user would, for a test module."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        timeout=300,
    )


@contextmanager
def installed(package: Path, distribution: str, module: str) -> Iterator[None]:
    """pip-installs `package` (a regular, non-editable install, --no-deps: importable at once in this
    process) and uninstalls it afterwards, leaving the venv as it was."""
    _pip("install", "--no-deps", str(package))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.modules.pop(module, None)
        _pip("uninstall", "-y", distribution)
        importlib.invalidate_caches()
