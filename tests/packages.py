"""Example packages (examples/) pip-installed into the venv as a user would, for a test module."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
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
    """pip-installs `package` as a user would (a regular, non-editable install, --no-deps), into a
    directory of its own put on this process's `sys.path`: importable at once here, its entry
    points found by importlib.metadata, and seen by no other process. (Installed into the venv,
    the other pytest-xdist workers' plugin loading found its entry point and then lost the module
    when this one uninstalled it.) `distribution` is the name pip installs it as."""
    with tempfile.TemporaryDirectory(prefix=f"{distribution}-") as target:
        _pip("install", "--no-deps", "--target", target, str(package))
        sys.path.insert(0, target)
        importlib.invalidate_caches()
        try:
            yield
        finally:
            sys.modules.pop(module, None)
            sys.path.remove(target)
            importlib.invalidate_caches()
