"""How tests/data/bots/holdout3.jsonl was made (kept for provenance; no test runs it).

holdout3 is user agents as the world sends them, from two maintained lists that the filters were
never tuned on, written before the rule changes it was then measured against (docs/bots.md):
- people: the real-world browser user agents of PyPI `fake-useragent` 2.2.0
  (`fake_useragent/data/browsers.jsonl`, collected from live traffic, each with its share), a
  seeded sample of distinct strings, phones and tablets mostly (SMS links are opened on phones);
- machines: the crawler, previewer, monitor and HTTP-library user agents of PyPI
  `crawler-user-agents` 1.67.0 (`crawler-user-agents.json`, monperrus/crawler-user-agents: each
  pattern with a URL and the strings it was seen with), one logged instance of each of a seeded
  sample of patterns.
Addresses and timings are synthetic and chosen so that the user agent alone decides: people on
carrier and residential networks (the allocations holdout2's author named), machines on
documentation addresses (RFC 5737, RFC 3849: in no list), every click at least 3 s after the
receipt. So holdout3 measures the user-agent judgement (and that no person's network is listed),
not the timing or network filters.

    python tests/data/bots/make_holdout3.py BROWSERS_JSONL CRAWLER_USER_AGENTS_JSON > tests/data/bots/holdout3.jsonl
"""

from __future__ import annotations

import ipaddress
import json
import random
import sys
from pathlib import Path

SEED = 14
PEOPLE_MOBILE, PEOPLE_DESKTOP, MACHINES = 190, 60, 250
# Where people click from: carrier and residential allocations (holdout2's, from memory of the
# registries' allocations, not checked against live WHOIS).
PEOPLE_NETWORKS = [
    ("T-Mobile US", "172.32.0.0/11"),
    ("T-Mobile US", "2607:fb90::/32"),
    ("Verizon Wireless", "174.192.0.0/10"),
    ("Verizon Wireless", "2600:1000::/28"),
    ("AT&T Mobility", "166.128.0.0/9"),
    ("AT&T Mobility", "2600:380::/25"),
    ("Comcast Xfinity residential", "73.0.0.0/8"),
    ("Comcast Xfinity residential", "2601::/20"),
    ("Reliance Jio", "49.32.0.0/12"),
    ("Reliance Jio mobile", "2409:4000::/22"),
    ("Bharti Airtel", "2401:4900::/32"),
    ("Deutsche Telekom", "79.192.0.0/10"),
    ("Telekom Deutschland mobile", "2a01:598::/32"),
    ("Orange France", "2a01:cb00::/32"),  # holdout2 wrote /16, which has host bits set
    ("Vodafone UK mobile", "148.252.0.0/16"),
    ("BT residential", "86.128.0.0/10"),
]
MACHINE_NETWORKS = [("documentation (RFC 5737)", "203.0.113.0/24"), ("documentation (RFC 3849)", "2001:db8::/32")]


def host_in(rng: random.Random, cidr: str) -> str:
    network = ipaddress.ip_network(cidr)
    return str(network.network_address + rng.randrange(1, network.num_addresses - 1))


def entry(
    label: str, agent: str, rng: random.Random, networks: list[tuple[str, str]], source: str
) -> dict[str, object]:
    name, cidr = rng.choice(networks)
    delivery = round(rng.uniform(1.0, 12.0), 1)
    if label == "human":  # a person's first look: seconds to hours after the text arrived
        after = round(max(3.0, rng.lognormvariate(4.5, 1.6)), 1)
    else:  # a crawler comes whenever the link reached it: no timing tells
        after = round(rng.uniform(30.0, 86400.0), 1)
    receipt = rng.random() > 0.1
    return {
        "label": label,
        "method": "GET",
        "user_agent": agent,
        "ip": host_in(rng, cidr),
        "seconds_after_send": round(after + delivery, 1),
        "seconds_after_delivery": after if receipt else None,
        "headers": {},
        "source": f"{source}; address: {name} ({cidr}); timing synthetic (seed {SEED}); holdout3",
    }


def main(browsers_path: str, crawlers_path: str) -> None:
    rng = random.Random(SEED)
    lines = Path(browsers_path).read_text(encoding="utf-8").splitlines()
    browsers = [json.loads(line) for line in lines if line.strip()]
    by_type: dict[str, list[str]] = {"phone": [], "desktop": []}
    for row in browsers:
        kind = "phone" if row["type"] in ("mobile", "tablet") else "desktop"
        if row["useragent"] not in by_type[kind]:
            by_type[kind].append(row["useragent"])
    out = []
    for kind, count in (("phone", PEOPLE_MOBILE), ("desktop", PEOPLE_DESKTOP)):
        for agent in rng.sample(by_type[kind], count):
            source = f"UA: fake-useragent 2.2.0 data/browsers.jsonl (real-world {kind} browser)"
            out.append(entry("human", agent, rng, PEOPLE_NETWORKS, source))
    listed = json.loads(Path(crawlers_path).read_text(encoding="utf-8"))
    crawlers = [c for c in listed if c.get("instances")]
    for crawler in rng.sample(crawlers, MACHINES):
        agent = rng.choice(crawler["instances"])
        source = (
            f"UA: crawler-user-agents 1.67.0, pattern {crawler['pattern']!r}"
            f" ({crawler.get('url') or 'no url'}), a logged instance"
        )
        out.append(entry("bot", agent, rng, MACHINE_NETWORKS, source))
    rng.shuffle(out)
    for row in out:
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
