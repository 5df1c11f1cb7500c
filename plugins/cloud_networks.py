"""Write a data-centre networks file (plugins/data/cloud_networks.txt) from the clouds' own lists.

A link in a text is opened on a phone; a fetch from a cloud's compute ranges is a scanner, a
sandbox or a headless browser (docs/bots.md, `cloud_network`). The clouds publish those ranges
and change them weekly, so the shipped file ages: download the providers' files yourself and
write your own copy, then point `[plugins.botfilters] cloud_networks_file` at it:

    curl -sO https://ip-ranges.amazonaws.com/ip-ranges.json
    curl -sO https://www.gstatic.com/ipranges/cloud.json
    curl -sL -o azure.json <the current ServiceTags_Public_*.json linked from
        https://www.microsoft.com/en-us/download/details.aspx?id=56519>
    curl -sO https://digitalocean.com/geo/google.csv
    curl -sO https://docs.oracle.com/en-us/iaas/tools/public_ip_ranges.json
    python -m plugins.cloud_networks --aws ip-ranges.json --gcp cloud.json --azure azure.json \
        --digitalocean google.csv --oracle public_ip_ranges.json > var/cloud_networks.txt

Any of the five may be left out. Only compute ranges are taken (AWS `EC2`, Azure `AzureCloud`,
Google Cloud's customer ranges, all of DigitalOcean's and Oracle's): no CDN (CloudFront,
Cloudflare: iCloud Private Relay and WARP carry people through them).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO


@dataclass(frozen=True)
class Provider:
    """One cloud's compute ranges, where they come from, and the date its file says it is of."""

    name: str
    source: str
    published: str  # the date the provider's file gives (or "unknown")
    cidrs: tuple[str, ...]


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _date(value: Any) -> str:
    """A provider's timestamp ("2026-10-26-18-12-05", "2026-10-26T18:12:05", 1792977064...) as a date."""
    text = str(value or "").strip()
    if text.isdigit() and len(text) >= 9:
        return datetime.fromtimestamp(int(text), UTC).date().isoformat()
    return text[:10] if len(text) >= 10 else "unknown"


def aws(path: Path) -> Provider:
    data = _load(path)
    cidrs = [p["ip_prefix"] for p in data.get("prefixes", []) if p.get("service") == "EC2"]
    cidrs += [p["ipv6_prefix"] for p in data.get("ipv6_prefixes", []) if p.get("service") == "EC2"]
    return Provider(
        "aws",
        "https://ip-ranges.amazonaws.com/ip-ranges.json (service EC2)",
        _date(data.get("createDate")),
        tuple(cidrs),
    )


def gcp(path: Path) -> Provider:
    data = _load(path)
    cidrs = [p.get("ipv4Prefix") or p.get("ipv6Prefix") for p in data.get("prefixes", [])]
    return Provider(
        "gcp",
        "https://www.gstatic.com/ipranges/cloud.json (Google Cloud customer ranges)",
        _date(data.get("creationTime")),
        tuple(c for c in cidrs if c),
    )


def azure(path: Path) -> Provider:
    data = _load(path)
    cidrs: list[str] = []
    for value in data.get("values", []):
        if value.get("name") == "AzureCloud":
            cidrs += value.get("properties", {}).get("addressPrefixes", [])
    return Provider(
        "azure",
        "Azure IP Ranges and Service Tags, Public Cloud"
        " (https://www.microsoft.com/en-us/download/details.aspx?id=56519), tag AzureCloud",
        f"change {data.get('changeNumber', 'unknown')}",
        tuple(cidrs),
    )


def digitalocean(path: Path) -> Provider:
    with path.open(encoding="utf-8", newline="") as handle:
        cidrs = [row[0].strip() for row in csv.reader(handle) if row and row[0].strip()]
    return Provider("digitalocean", "https://digitalocean.com/geo/google.csv", "unknown", tuple(cidrs))


def oracle(path: Path) -> Provider:
    data = _load(path)
    cidrs = [c["cidr"] for region in data.get("regions", []) for c in region.get("cidrs", [])]
    return Provider(
        "oracle",
        "https://docs.oracle.com/en-us/iaas/tools/public_ip_ranges.json",
        _date(data.get("last_updated_timestamp")),
        tuple(cidrs),
    )


PARSERS = {"aws": aws, "gcp": gcp, "azure": azure, "digitalocean": digitalocean, "oracle": oracle}


def merged(cidrs: Iterable[str]) -> list[str]:
    """The CIDRs collapsed (adjacent and nested blocks joined), IPv4 first; a bad one is a ValueError."""
    networks = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]
    v4 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv6Network))
    return [str(n) for n in (*v4, *v6)]


def write(providers: Sequence[Provider], out: TextIO, *, taken: str, via: str = "") -> None:
    """The networks file: a header, then per provider a `# -- name` line with its source, the
    date of its data (`published`) and when it was taken (`checked`), then its CIDRs."""
    out.write(
        "# Data-centre (cloud compute) networks: a click from one of them is `cloud_network` (docs/bots.md).\n"
        "# One CIDR per line, `#` starts a comment. Written by `python -m plugins.cloud_networks`\n"
        "# (its docstring says how to write a fresh copy from the providers' files).\n"
    )
    if via:
        out.write(f"# {via}\n")
    for provider in providers:
        blocks = merged(provider.cidrs)
        out.write(
            f"\n# -- {provider.name}: {len(blocks)} blocks. Source: {provider.source}\n"
            f"# published: {provider.published}; checked: {taken}\n"
        )
        out.writelines(f"{block}\n" for block in blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.cloud_networks", description=__doc__.split("\n", 1)[0])
    for name in PARSERS:
        parser.add_argument(f"--{name}", type=Path, help=f"the provider's published file ({name})")
    args = parser.parse_args(argv)
    chosen = [(name, getattr(args, name)) for name in PARSERS if getattr(args, name) is not None]
    if not chosen:
        parser.error("name at least one provider's file")
    try:
        providers = [PARSERS[name](path) for name, path in chosen]
        write(providers, sys.stdout, taken=datetime.now(UTC).date().isoformat())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cloud_networks: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
