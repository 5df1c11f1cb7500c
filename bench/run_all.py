"""`make bench`: every bench/ script in turn, its figures written into docs/benchmarks.md.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--database-url URL] [--doc PATH]

Each script of BENCHES runs as a subprocess with its "make bench" profile (short runs: the whole
took 5-7 minutes on 2 busy cores) and `--json var/bench/<name>.json`; its output is echoed and kept
in var/bench/<name>.log. A script that fails, outlives its timeout or writes no figures is recorded
as failed and the others still run. The machine is recorded beside the figures: CPUs, memory, the
load average before and after each script, Python, PostgreSQL, the commit and the date.

Only the section between BEGIN and END of the doc is rewritten, the doc read just before it is
written, so the hand-written analysis around it stays byte for byte; without the markers the
section goes after the doc's intro paragraph. With --only, the tables of the scripts not run are
kept as they were (each is dated).

--database-url names a PostgreSQL server on which the runner may CREATE DATABASE: each script that
takes a --database-url gets an empty database of its own (textpulse_bench_<name>), dropped after.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
OUT = ROOT / "var" / "bench"
BEGIN = "<!-- make bench: begin -->"
END = "<!-- make bench: end -->"


@dataclass(frozen=True)
class Bench:
    name: str  # for --only and the file names in var/bench/
    script: str  # under bench/
    args: tuple[str, ...]  # the "make bench" profile
    title: str  # of its table in the doc
    timeout: float = 600  # seconds, then the script's process group is stopped
    takes_database: bool = False  # gets --database-url when the runner has one


# The "make bench" profile, one line a script. The scripts' defaults are the longer runs that the
# hand-written sections of docs/benchmarks.md quote; these keep the whole run short
# (5-7 minutes on 2 busy cores, plus the million contacts' seeding).
BENCHES: list[Bench] = [
    Bench("redirect", "redirect.py", ("--rounds", "2", "--duration", "20"), "Redirect", takes_database=True),
    Bench("callbacks", "callbacks.py", ("--seconds", "5", "--rounds", "3"), "Status callbacks", takes_database=True),
    Bench("click_store", "click_store.py", ("--clicks", "20000"), "Storing clicks", timeout=300),
    Bench("control", "control.py", ("--trials", "3"), "Pause and cancel"),
    Bench("automations", "automations.py", ("--contacts", "500"), "Automations", takes_database=True),
    Bench("ab_simulation", "ab_simulation.py", ("--runs", "10000"), "A/B winner: false positives and power"),
    Bench(
        "stats",
        "stats.py",
        ("--messages", "1000000", "--clicks", "200000", "--requests", "20", "--rounds", "2"),
        "Stats routes at a million messages",
        timeout=1800,
        takes_database=True,
    ),
    Bench(
        "contacts",
        "contacts.py",
        ("--contacts", "1000000", "--requests", "200"),
        "Contacts at a million: attribute filters",
        timeout=1800,
        takes_database=True,
    ),
    Bench(
        "send",
        "send.py",
        ("--recipients", "100000"),
        "Snapshot and send",
        timeout=1800,
        takes_database=True,
    ),
]

REMINDER = (
    "The machine is shared (load averages above): compare the ratios and the CPU seconds, not the raw req/s, "
    "between runs."
)


# -- the machine ---------------------------------------------------------------------------------


@dataclass
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    postgresql: str | None  # the server's version, when --database-url was given
    commit: str  # short hash, "+ uncommitted changes" when the tree is dirty
    date: str  # UTC
    load: tuple[float, float, float]  # 1, 5 and 15 minutes, at the start
    seconds: float = 0.0  # the whole run


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"{commit} + uncommitted changes" if dirty else commit


def postgresql_version(database_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def machine_record(database_url: str | None = None) -> Machine:
    return Machine(
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        cpu_model=cpu_model(),
        memory_gib=memory_gib(),
        python=platform.python_version(),
        postgresql=postgresql_version(database_url) if database_url else None,
        commit=git_commit(),
        date=utc_now(),
        load=load_average(),
    )


# -- running one script --------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    command: str  # as shown in the doc (a database password masked)
    started: str
    commit: str
    seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    figures: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None  # None: it ran and wrote its figures


def relative(path: Path | str) -> str:
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@contextlib.contextmanager
def bench_database(bench: Bench, server_url: str | None) -> Iterator[str | None]:
    """An empty PostgreSQL database for one script, dropped afterwards (None: its own SQLite)."""
    if server_url is None or not bench.takes_database:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"textpulse_bench_{bench.name}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def shown(command: list[str]) -> str:
    """The command as the doc shows it: paths relative to the checkout, passwords masked."""
    from sqlalchemy.engine import make_url

    words = [relative(command[0]) if Path(command[0]).is_absolute() else command[0], *command[1:]]
    for index, word in enumerate(words):
        if index and words[index - 1] == "--database-url":
            words[index] = make_url(word).render_as_string(hide_password=True)
    return " ".join(words)


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the script and what it started (its own session), then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(20)
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_script(command: list[str], log: Path, timeout: float) -> str | None:
    """Run `command`, its output echoed and written to `log`; why it failed, or None."""
    last: collections.deque[str] = collections.deque(maxlen=20)
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # a process group of its own, to stop its servers with it
        )

        def tee() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                out.write(line)
                if line.strip():
                    last.append(line.strip())

        reader = threading.Thread(target=tee, name="bench-output", daemon=True)
        reader.start()
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_group(process)
            reader.join(10)
            return f"timed out after {timeout:.0f} s"
        reader.join(10)
        if reader.is_alive():  # a child still holds the output open: end what the script left behind
            stop_group(process)
            reader.join(10)
    if status != 0:
        tail = last[-1] if last else ""
        return f"exit status {status}" + (f": {tail[:200]}" if tail else "")
    return None


def read_figures(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The figures a script wrote with --json, and what is wrong with them (None: nothing)."""
    if not path.exists():
        return [], "wrote no figures (--json)"
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        return [], f"unreadable figures in {relative(path)}: {error}"
    numbers = ("value", "ceiling", "ratio")
    if not isinstance(figures, list) or not all(
        isinstance(row, dict)
        and "figure" in row
        and all(row.get(name) is None or isinstance(row[name], int | float) for name in numbers)
        for row in figures
    ):
        return [], f"{relative(path)} is not a list of figures"
    if not figures:
        return [], "wrote an empty list of figures"
    return figures, None


def run_bench(bench: Bench, database_url: str | None = None) -> Result:
    script = ROOT / "bench" / bench.script
    figures_file, log = OUT / f"{bench.name}.json", OUT / f"{bench.name}.log"
    figures_file.unlink(missing_ok=True)
    command = [sys.executable, relative(script), *bench.args, "--json", relative(figures_file)]
    result = Result(bench.name, shown(command), utc_now(), git_commit(), 0.0, load_average(), load_average())
    started = time.monotonic()
    if not script.exists():
        result.failure = f"{relative(script)} not found"
        return result
    try:
        with bench_database(bench, database_url) as url:
            if url is not None:
                command += ["--database-url", url]
                result.command = shown(command)
            result.failure = run_script(command, log, bench.timeout)
    except Exception as error:  # the database could not be made or dropped: this script's failure only
        result.failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    result.seconds = time.monotonic() - started
    result.load_after = load_average()
    result.figures, problem = read_figures(figures_file)
    result.failure = result.failure or problem
    return result


# -- the doc -------------------------------------------------------------------------------------


def number(value: float) -> str:
    """Deterministic: the same figure is always written the same way."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def load_text(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def machine_line(machine: Machine) -> str:
    databases = f"PostgreSQL {machine.postgresql}" if machine.postgresql else "SQLite (temporary files)"
    return (
        f"Machine: {machine.cpus} CPUs ({machine.cpu_model}), {machine.memory_gib:.1f} GiB of memory; "
        f"Python {machine.python}; {databases}; commit {machine.commit}; {machine.date}; "
        f"load average {load_text(machine.load)} (1, 5, 15 min) at the start; {duration(machine.seconds)} in all."
    )


def heading(bench: Bench) -> str:
    return f"### {bench.title}: `bench/{bench.script}`"


def render_result(bench: Bench, result: Result) -> list[str]:
    lines = [
        heading(bench),
        "",
        f"    {result.command}",
        "",
        f"{result.started}, commit {result.commit}: {duration(result.seconds)}; load average "
        f"{load_text(result.load_before)} before, {load_text(result.load_after)} after.",
        "",
    ]
    if result.failure:
        lines += [f"failed: {result.failure}", ""]
    if not result.figures:
        return lines
    command = cell("`" + " ".join([f"bench/{bench.script}", *bench.args]) + "`")
    lines += ["| figure | value | ceiling | ratio | command |", "|---|---|---|---|---|"]
    for row in result.figures:
        unit = row.get("unit") or ""
        value = "—" if row.get("value") is None else f"{number(row['value'])} {unit}".rstrip()
        if row.get("note"):
            value += f" ({row['note']})"
        ceiling = "—"
        if row.get("ceiling") is not None:
            ceiling = f"{number(row['ceiling'])} {unit}".rstrip()
            if row.get("ceiling_name"):
                ceiling += f" ({row['ceiling_name']})"
        ratio = "—" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        lines.append(f"| {cell(str(row['figure']))} | {cell(value)} | {cell(ceiling)} | {ratio} | {command} |")
    return [*lines, ""]


def render_section(machine: Machine, results: list[Result], earlier: dict[str, str] | None = None) -> str:
    """The generated section, markers excluded. `earlier`: tables of a former run by heading, kept
    for the scripts this run left out."""
    by_name = {result.name: result for result in results}
    kept = [bench.name for bench in BENCHES if bench.name not in by_name and heading(bench) in (earlier or {})]
    partial = f"This run: {', '.join(by_name)}; the tables of {', '.join(kept)} are from earlier runs (each dated)."
    lines = [
        "## Latest figures (`make bench`)",
        "",
        "Written by `make bench` (bench/run_all.py); the sections after this one are written by hand.",
        "A ratio is how close a figure comes to its ceiling, measured in the same run: 1 at the ceiling "
        "(figure / ceiling for rates, ceiling / figure for costs).",
        "",
        machine_line(machine) + (f" {partial}" if kept else ""),
        "",
        REMINDER,
        "",
    ]
    for bench in BENCHES:
        if bench.name in by_name:
            lines += render_result(bench, by_name[bench.name])
        elif earlier and heading(bench) in earlier:
            lines += [earlier[heading(bench)], ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def generated_tables(doc: str) -> dict[str, str]:
    """The tables (by heading) of the generated section of `doc`, as written."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start == -1 or end < start:
        return {}
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc[start + len(BEGIN) : end].splitlines():
        if line.startswith("### "):
            current = tables[line] = [line]
        elif current is not None:
            current.append(line)
    return {title: "\n".join(lines).rstrip("\n") for title, lines in tables.items()}


def after_intro(doc: str) -> int:
    """Where the generated section goes when the doc has none: after the title and the paragraph
    that follows it."""
    lines = doc.splitlines(keepends=True)
    at = index = 0

    def skip(keep: Any) -> None:
        nonlocal at, index
        while index < len(lines) and keep(lines[index]):
            at += len(lines[index])
            index += 1

    skip(lambda line: line.startswith("# "))
    skip(lambda line: not line.strip())
    skip(lambda line: line.strip() and not line.startswith("#"))
    skip(lambda line: not line.strip())
    return at


def rewrite_doc(doc: str, section: str) -> str:
    """`doc` with its generated section replaced by `section` (inserted after the intro when the
    markers are missing); every other byte as it was."""
    block = f"{BEGIN}\n{section.rstrip(chr(10))}\n{END}"
    start = doc.find(BEGIN)
    if start != -1:
        end = doc.find(END, start)
        if end == -1:
            raise ValueError(f"the doc has {BEGIN} without {END}")
        return doc[:start] + block + doc[end + len(END) :]
    at = after_intro(doc)
    before = doc[:at]
    gap = "" if not before or before.endswith("\n\n") else "\n" if before.endswith("\n") else "\n\n"
    return before + gap + block + "\n\n" + doc[at:]


# -- the run -------------------------------------------------------------------------------------


def verdict(result: Result) -> str:
    return f"failed: {result.failure}" if result.failure else "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", metavar="NAME", choices=[bench.name for bench in BENCHES], help="run only these"
    )
    parser.add_argument("--database-url", help="a PostgreSQL server to make each script's database on")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"the doc to rewrite ({relative(DOC)})")
    args = parser.parse_args(argv)
    selected = [bench for bench in BENCHES if not args.only or bench.name in args.only]
    OUT.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    machine = machine_record(args.database_url)
    print(machine_line(machine), flush=True)
    results = []
    for bench in selected:
        print(f"\n== {bench.name}: bench/{bench.script} {' '.join(bench.args)}", flush=True)
        result = run_bench(bench, args.database_url)
        results.append(result)
        print(f"== {bench.name}: {verdict(result)} in {result.seconds:.0f} s", flush=True)
    machine.seconds = time.monotonic() - began
    doc = args.doc.read_text(encoding="utf-8")  # read just before writing: others edit the hand-written part
    earlier = generated_tables(doc) if args.only else None
    args.doc.write_text(rewrite_doc(doc, render_section(machine, results, earlier)), encoding="utf-8")
    (OUT / "run.json").write_text(
        json.dumps({"machine": asdict(machine), "results": [asdict(r) for r in results]}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {relative(args.doc)} in {machine.seconds / 60:.1f} min; figures and logs in {relative(OUT)}/")
    for result in results:
        print(f"  {result.name:<14} {result.seconds:>5.0f} s  {verdict(result)}")
    return 1 if any(result.failure for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
