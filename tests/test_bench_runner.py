"""`make bench` (bench/run_all.py): it rewrites only its own section of docs/benchmarks.md, shows a
failed script as failed without losing the others, records the machine, and every script it runs
takes `--json`. No real benchmark runs here: the scripts run are stand-ins of a few lines."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import run_all
from bench.figures import Figure, write_figures
from bench.run_all import BEGIN, BENCHES, END, Bench, Machine, Result

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")

MACHINE = Machine(
    cpus=2,
    cpu_model="AMD EPYC",
    memory_gib=23.5,
    python="3.11.7",
    postgresql=None,
    commit="64087a0",
    date="2026-12-01 17:00 UTC",
    load=(2.5, 3.0, 2.75),
    seconds=640.0,
)


def result(name: str, failure: str | None = None, value: float = 12475.0) -> Result:
    figures = (
        []
        if failure
        else [
            {
                "figure": "redirects per second (median)",
                "value": value,
                "unit": "req/s",
                "ceiling": 22867.0,
                "ceiling_name": "raw ASGI 302",
                "ratio": value / 22867.0,
                "note": None,
            },
            {
                "figure": "click rows written",
                "value": 400741,
                "unit": "rows",
                "note": "every redirect has its click row",
            },
        ]
    )
    return Result(
        name=name,
        command=f".venv/bin/python bench/{name}.py --json var/bench/{name}.json",
        started="2026-12-01 17:01 UTC",
        commit="64087a0",
        seconds=95.2,
        load_before=(2.5, 3.0, 2.75),
        load_after=(3.25, 3.1, 2.8),
        figures=figures,
        failure=failure,
    )


def block_of(section: str) -> str:
    return f"{BEGIN}\n{section.rstrip(chr(10))}\n{END}"


def test_the_markers_are_inserted_after_the_intro_when_missing() -> None:
    doc = "# Benchmarks\n\nFigures printed by the scripts,\nwith their commands.\n\n## Redirect\n\nBy hand.\n"
    section = run_all.render_section(MACHINE, [result("redirect")])
    new = run_all.rewrite_doc(doc, section)
    assert new.index("with their commands.") < new.index(BEGIN) < new.index(END) < new.index("\n## Redirect\n")
    assert new.replace(block_of(section) + "\n\n", "") == doc


def outside(doc: str) -> str:
    """The doc without its generated section (markers included)."""
    return doc[: doc.index(BEGIN)] + doc[doc.index(END) + len(END) :]


def test_only_the_generated_section_is_replaced_and_the_rest_kept_byte_for_byte() -> None:
    first = run_all.rewrite_doc(DOC, run_all.render_section(MACHINE, [result("redirect", value=9000.0)]))
    second = run_all.rewrite_doc(first, run_all.render_section(MACHINE, [result("redirect", value=12475.0)]))
    assert "9,000 req/s" in first and "9,000 req/s" not in second and "12,475 req/s" in second
    assert outside(second) == outside(first)
    if BEGIN in DOC:  # the doc as it is: its hand-written parts untouched
        assert outside(second) == outside(DOC)
    else:
        assert second.replace(second[second.index(BEGIN) : second.index(END) + len(END)] + "\n\n", "") == DOC
    # Written again with the same figures, nothing changes: a diff shows changed figures only.
    assert run_all.rewrite_doc(second, run_all.render_section(MACHINE, [result("redirect")])) == second


def test_a_begin_marker_without_its_end_is_refused() -> None:
    with pytest.raises(ValueError):
        run_all.rewrite_doc(f"# B\n\nIntro.\n\n{BEGIN}\nhalf\n", "section\n")


def test_a_failed_script_is_shown_as_failed_beside_the_others() -> None:
    section = run_all.render_section(
        MACHINE, [result("redirect"), result("callbacks", failure="timed out after 300 s")]
    )
    assert "failed: timed out after 300 s" in section
    assert "### Status callbacks: `bench/callbacks.py`" in section
    assert "| redirects per second (median) | 12,475 req/s | 22,867 req/s (raw ASGI 302) | 0.55 |" in section
    assert "`bench/redirect.py --rounds 2 --duration 20` |" in section
    assert run_all.REMINDER in section
    assert section == run_all.render_section(
        MACHINE, [result("redirect"), result("callbacks", failure="timed out after 300 s")]
    )


def test_with_only_the_tables_of_scripts_not_run_are_kept_as_written() -> None:
    doc = run_all.rewrite_doc(DOC, run_all.render_section(MACHINE, [result("redirect"), result("callbacks")]))
    earlier = run_all.generated_tables(doc)
    callbacks = earlier["### Status callbacks: `bench/callbacks.py`"]
    again = run_all.render_section(MACHINE, [result("redirect", value=10000.0)], earlier)
    assert callbacks in again and "10,000 req/s" in again
    assert "This run: redirect; the tables of callbacks are from earlier runs (each dated)." in again


@pytest.mark.parametrize(
    ("value", "written"), [(12475.3, "12,475"), (58580, "58,580"), (13.02, "13.0"), (1.32, "1.32"), (-0.053, "-0.053")]
)
def test_numbers_are_written_one_way(value: float, written: str) -> None:
    assert run_all.number(value) == written


STAND_INS = {
    "fails": "import sys\nprint('boom', flush=True)\nsys.exit(3)\n",
    "hangs": "import time\ntime.sleep(60)\n",
    "silent": "pass\n",
    "works": textwrap.dedent(
        """
        import json, sys
        path = sys.argv[sys.argv.index("--json") + 1]
        rows = [{"figure": "callbacks per second", "value": 4053.0, "unit": "req/s", "ceiling": 11980.0,
                 "ceiling_name": "raw ASGI 204", "ratio": 0.338, "note": None}]
        open(path, "w").write(json.dumps(rows))
        """
    ),
}


def test_a_failing_script_is_recorded_as_failed_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    benches = []
    for name, source in STAND_INS.items():
        (tmp_path / f"{name}.py").write_text(source)
        benches.append(Bench(name, str(tmp_path / f"{name}.py"), (), name.title(), timeout=2))
    benches.append(Bench("missing", str(tmp_path / "missing.py"), (), "Missing"))
    monkeypatch.setattr(run_all, "BENCHES", benches)
    monkeypatch.setattr(run_all, "OUT", tmp_path / "out")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nIntro.\n\n## By hand\n\nKept.\n")

    assert run_all.main(["--doc", str(doc)]) == 1

    written = doc.read_text()
    assert written.endswith("## By hand\n\nKept.\n")
    assert "failed: exit status 3: boom" in written
    assert "failed: timed out after 2 s" in written
    assert "failed: wrote no figures (--json)" in written
    assert "failed: " + str(tmp_path / "missing.py") + " not found" in written
    assert "| callbacks per second | 4,053 req/s | 11,980 req/s (raw ASGI 204) | 0.34 |" in written
    assert (tmp_path / "out" / "fails.log").read_text() == "boom\n"
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [r["name"] for r in record["results"]] == ["fails", "hangs", "silent", "works", "missing"]


def test_the_machine_record_has_its_fields() -> None:
    machine = run_all.machine_record()
    assert machine.cpus >= 1 and machine.cpu_model and machine.memory_gib > 0
    assert machine.python == platform.python_version()
    assert machine.postgresql is None
    assert re.fullmatch(r"([0-9a-f]{7,}|unknown commit)( \+ uncommitted changes)?", machine.commit)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", machine.date)
    assert len(machine.load) == 3
    line = run_all.machine_line(machine)
    for part in (f"{machine.cpus} CPUs", machine.cpu_model, "GiB", machine.python, machine.commit, machine.date):
        assert part in line


def test_figures_that_could_not_be_measured_are_written_as_null(tmp_path: Path) -> None:
    write_figures(str(tmp_path / "f.json"), [Figure("noticed after", float("inf"), "s"), Figure("rows", 3, "rows")])
    rows = json.loads((tmp_path / "f.json").read_text())
    assert rows[0]["value"] is None and rows[0]["note"] == "not measured"
    assert rows[1] == {
        "figure": "rows",
        "value": 3,
        "unit": "rows",
        "ceiling": None,
        "ceiling_name": None,
        "ratio": None,
        "note": None,
    }


@pytest.mark.parametrize("bench", BENCHES, ids=lambda bench: bench.name)
def test_every_script_in_the_registry_takes_json_and_its_profile(bench: Bench) -> None:
    shown = subprocess.run(
        [sys.executable, f"bench/{bench.script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert "--json" in shown.stdout
    for option in (arg for arg in bench.args if arg.startswith("--")):
        assert option in shown.stdout, f"bench/{bench.script} has no {option}"
    if bench.takes_database:
        assert "--database-url" in shown.stdout
