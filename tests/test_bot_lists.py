"""The bot filters' data files (plugins/data/): every entry and section says where it comes from
and when it was last checked against that; a user's own copies replace them; the data-centre
list is written from the clouds' own files by `python -m plugins.cloud_networks`; and the rules
that generalise (signed user agents, data-centre addresses) judge as docs/bots.md says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.hooks.registry import load_plugins
from core.settings import Settings
from plugins.botfilters import CLOUD_NETWORKS_FILE, NETWORKS_FILE, PREVIEW_AGENTS_FILE, UserAgentFilter, load_agents

ROOT = Path(__file__).resolve().parent.parent
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def sections(path: Path) -> list[list[str]]:
    """A networks file's sections: the comment lines from a `# -- ` line to its first CIDR."""
    found: list[list[str]] = []
    heading = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# -- "):
            found.append([line])
            heading = True
        elif heading and line.startswith("#"):
            found[-1].append(line)
        else:
            heading = False
    return found


def test_every_previewer_entry_has_a_source_and_a_checked_date() -> None:
    agents = load_agents(PREVIEW_AGENTS_FILE)
    assert len(agents) >= 20
    for agent in agents:
        assert agent.source.strip() and isinstance(agent.checked, date), agent.name
        assert agent.checked <= date.today(), agent.name


@pytest.mark.parametrize("path", [NETWORKS_FILE, CLOUD_NETWORKS_FILE], ids=lambda p: p.name)
def test_every_networks_section_has_a_source_and_a_checked_date(path: Path) -> None:
    found = sections(path)
    assert len(found) >= 5
    for section in found:
        text = " ".join(section)
        assert "Source" in text or "source" in text, section[0]
        checked = re.search(r"checked: (\d{4}-\d{2}-\d{2})", text)
        assert checked, f"{path.name}: {section[0]} says not when it was checked"
        assert date.fromisoformat(checked.group(1)) <= date.today()


def test_a_bad_checked_date_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "agents.toml"
    mine.write_text('[[agent]]\nname = "x"\nkind = "preview"\npattern = "x"\nsource = "me"\nchecked = "last week"\n')
    with pytest.raises(ValueError, match="checked must be a date"):
        load_agents(mine)


def test_a_users_own_lists_replace_the_shipped_ones(tmp_path: Path) -> None:
    """`agents_file`, `networks_file` and `cloud_networks_file` point at copies a user keeps;
    an empty value turns a list off."""
    agents = tmp_path / "agents.toml"
    agents.write_text(
        '[[agent]]\nname = "acme_preview"\nkind = "preview"\npattern = "AcmeChat"\n'
        'source = "our logs"\nchecked = 2026-12-01\n'
    )
    cloud = tmp_path / "cloud.txt"
    cloud.write_text("# -- ours. Source: our provider's page\n# checked: 2026-12-01\n198.51.100.0/24\n")
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    config = {
        "plugins": {"botfilters": {"agents_file": str(agents), "networks_file": "", "cloud_networks_file": str(cloud)}}
    }
    registry = load_plugins(settings, config=config)
    try:
        by_name = {f.name: f for f in registry.bot_filters}
        assert "ip_range" not in by_name
        agent_filter = by_name["user_agent"]
        assert agent_filter.judge(SimpleNamespace(user_agent=f"{CHROME} AcmeChat/2")) == (
            1.0,
            "bot_user_agent:acme_preview",
        )
        assert agent_filter.judge(SimpleNamespace(user_agent="WhatsApp/2.23.20.0 A")) == (
            1.0,
            "bot_user_agent",
        )  # not named now
        assert by_name["cloud_network"].judge(SimpleNamespace(ip="198.51.100.9")) == (0.8, "cloud_network")
        assert by_name["cloud_network"].judge(SimpleNamespace(ip="3.120.5.5")) == (0.0, None)  # the shipped list is off
    finally:
        registry.close()
    with pytest.raises(ValueError, match="cloud_networks_file: cannot read"):
        load_plugins(settings, config={"plugins": {"botfilters": {"cloud_networks_file": str(tmp_path / "none.txt")}}})


@pytest.mark.parametrize(
    "agent,flagged",
    [
        ("Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)", True),  # a contact address
        ("Mozilla/5.0 (compatible; ExampleFetcher/2.0; +https://example.org/bot)", True),
        (f"{CHROME} Monitor/1.0 (ops@example.org)", True),  # an e-mail address
        ("Mozilla/5.0 (compatible; Acme/1.0)", True),  # "compatible;" that is no old browser's
        ("Mozilla/5.0", True),  # no platform at all
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", False),  # old Internet Explorer
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch)", False),
        (CHROME, False),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148 [FBAN/FBIOS;FBAV/480.0.0.38.109;FBBV/650000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS]",
            False,
        ),  # fmt: skip
    ],
)
def test_a_signed_user_agent_is_a_machines(agent: str, flagged: bool) -> None:
    verdict = UserAgentFilter().judge(SimpleNamespace(user_agent=agent))
    assert verdict == ((1.0, "bot_user_agent") if flagged else (0.0, None))


@pytest.mark.parametrize(
    "ip,reason",
    [
        ("3.122.58.200", "cloud_network"),  # AWS EC2, eu-central-1
        ("34.105.99.202", "cloud_network"),  # Google Cloud
        ("167.99.210.32", "cloud_network"),  # DigitalOcean
        ("2600:1f18:1234::1", "cloud_network"),  # AWS EC2 IPv6, us-east-1
        ("172.56.21.84", None),  # T-Mobile US: a phone
        ("104.16.0.1", None),  # Cloudflare: WARP and iCloud Private Relay carry people, never listed
        ("17.58.101.4", None),  # Apple: not a cloud of this list
    ],
)
def test_data_centre_addresses(ip: str, reason: str | None, tmp_path: Path) -> None:
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    registry = load_plugins(settings, config={})
    try:
        cloud = next(f for f in registry.bot_filters if f.name == "cloud_network")
        assert cloud.judge(SimpleNamespace(ip=ip)) == ((0.8, reason) if reason else (0.0, None))
    finally:
        registry.close()


def test_the_cloud_list_is_written_from_the_providers_files(tmp_path: Path) -> None:
    """What the docstring of plugins/cloud_networks.py tells a user to run, on small copies of the
    five providers' formats: compute ranges only (no CloudFront, no other Azure tag), merged."""
    (tmp_path / "aws.json").write_text(json.dumps({
        "createDate": "2026-11-30-10-00-00",
        "prefixes": [{"ip_prefix": "3.5.0.0/24", "service": "EC2"}, {"ip_prefix": "3.5.1.0/24", "service": "EC2"},
                     {"ip_prefix": "13.32.0.0/15", "service": "CLOUDFRONT"}],
        "ipv6_prefixes": [{"ipv6_prefix": "2600:1f00::/40", "service": "EC2"}],
    }))  # fmt: skip
    (tmp_path / "gcp.json").write_text(
        json.dumps({"creationTime": "2026-11-29T08:00:00", "prefixes": [{"ipv4Prefix": "34.1.0.0/20"}]})
    )
    (tmp_path / "azure.json").write_text(json.dumps({"changeNumber": 321, "values": [
        {"name": "AzureCloud", "properties": {"addressPrefixes": ["20.1.0.0/16"]}},
        {"name": "AzureFrontDoor.Frontend", "properties": {"addressPrefixes": ["13.107.0.0/16"]}},
    ]}))  # fmt: skip
    (tmp_path / "do.csv").write_text("5.101.96.0/21,NL,NL-NH,Amsterdam,\n")
    (tmp_path / "oci.json").write_text(json.dumps({
        "last_updated_timestamp": "2026-11-28T00:00:00",
        "regions": [{"region": "x", "cidrs": [{"cidr": "129.146.0.0/21"}]}],
    }))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "plugins.cloud_networks", "--aws", "aws.json", "--gcp", "gcp.json", "--azure",
         "azure.json", "--digitalocean", "do.csv", "--oracle", "oci.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = tmp_path / "cloud.txt"
    written.write_text(done.stdout)
    cidrs = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert cidrs == ["3.5.0.0/23", "2600:1f00::/40", "34.1.0.0/20", "20.1.0.0/16", "5.101.96.0/21", "129.146.0.0/21"]
    assert "# published: 2026-11-30; checked: " in done.stdout and "# published: change 321" in done.stdout
    assert len(sections(written)) == 5
    for section in sections(written):
        assert re.search(r"checked: \d{4}-\d{2}-\d{2}", " ".join(section))
    bad = subprocess.run(
        [sys.executable, "-m", "plugins.cloud_networks", "--aws", "missing.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert bad.returncode == 1 and "missing.json" in bad.stderr


@pytest.mark.parametrize("bad", ["1.2.3.4/33", "::1/129", "1.2.3/24", "example.org", "10.0.0.0/x"])
def test_a_bad_block_in_a_networks_file_is_named_at_load(bad: str, tmp_path: Path) -> None:
    mine = tmp_path / "cloud.txt"
    mine.write_text(f"# -- ours\n# checked: 2026-12-01\n198.51.100.0/24\n{bad}\n")
    settings = Settings.from_env({"TEXTPULSE_DATA_DIR": str(tmp_path)})
    with pytest.raises(ValueError, match=re.escape(bad)):
        load_plugins(settings, config={"plugins": {"botfilters": {"cloud_networks_file": str(mine)}}})
