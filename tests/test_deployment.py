"""docker-compose.yml cannot run here (no Docker engine): check what can be checked of it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from textpulse.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_describes_postgres_temporal_worker_and_api() -> None:
    services = _compose()["services"]
    assert {"postgres", "temporal", "migrate", "worker", "api"} <= set(services)
    assert services["api"]["ports"] == ["8000:8000"]
    for name in ("worker", "api"):
        env = services[name]["environment"]
        assert env["TEXTPULSE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TEXTPULSE_TEMPORAL_ADDRESS"] == "temporal:7233"
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_are_commands_of_our_cli() -> None:
    parser = build_parser()
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if not command or service.get("image", "").split(":")[0] != "textpulse":
            continue
        assert command[0] == "textpulse", name
        args = parser.parse_args(command[1:])
        assert args.command == command[1]


def test_dockerfile_ships_every_package_and_the_console_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [pattern.rstrip("*") for pattern in shipped]
    assert "textpulse" in packages
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, f"the image lacks the package {package!r}"
    assert "constraints.txt" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'textpulse = "textpulse.cli:main"' in pyproject
