"""Judging clicks together (bursts, every link of a message) in a process of its own.

The click writer stores each batch of clicks with the verdicts of the per-click filters, then
hands it to a judge process over a pipe. The judge keeps the last seconds of clicks (`Rounds`:
the window) and runs the together-filters (`textpulse.JudgesTogether`) over them in rounds; it
answers the stored clicks whose verdict changed, and the writer writes those verdicts over their
rows (core/tracking/click_store.py `update_verdicts`).

Why a process: a round reads the whole window (100,000 clicks at 20,000 a second) in Python. In
the redirect's process it ran in the writer's thread, and a thread busy in Python starves an
event loop doing I/O (each socket send gives up the GIL and waits up to a switch interval to get
it back): the loop stood still for a whole round, 30-110 ms, and that was the redirect's p99 at
saturation (docs/benchmarks.md, "The behaviour filters and the redirect"). The window's clicks
were long-lived objects too, each full garbage collection of the redirect's process walking them.
The judge has its own interpreter: the redirect pays for a tuple and its pickling per click.

The judge dies with its parent (daemon; and it stops on the pipe's end); should it die first, the
writer starts another and the window starts empty (logged): a burst spanning that moment may be
seen in part, which a re-score (`textpulse rescore`) puts right.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from core.hooks.contracts import JudgesTogether
from core.log import get_logger
from core.tracking.bots import judge_together, together_window
from core.tracking.clicks import ClickRecord
from core.tracking.codes import CodeTarget

log = get_logger("textpulse.redirect")

# The clicks kept for the together-filters' window, at most (a few seconds of a heavy load).
WINDOW_CAPACITY = 100_000
# A round waits at least this many times its predecessor's duration: at most about a tenth of the
# judge's core goes to judging, however heavy the load.
ROUND_SHARE = 10
# A round reads the window before the clicks it judges: under a heavy load it waits until it judges
# at least 1/ROUND_READS as many clicks as the window holds (or the window's span has passed, or no
# click came for `together_every`), so that each click is read about ROUND_READS times, not
# (span / together_every) times: at 20,000 clicks a second, a round every second or so instead of
# twenty rounds each reading every click of a 5-second window.
ROUND_READS = 4
PIECE = 2000  # clicks per message on the pipe (a pickling holds the sender's GIL that long)


class Rounds:
    """The together-filters' rounds over the last clicks stored (the window).

    `add()` the clicks of each stored batch; `due_at()` says when a round is due; `run()` runs one
    and returns the clicks whose verdict it changed (of the batch or of the window before it)."""

    def __init__(
        self,
        together: Sequence[JudgesTogether],
        *,
        together_every: float = 0.25,
        capacity: int = WINDOW_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.together = tuple(together)
        self.together_every = together_every
        self.capacity = capacity
        self.clock = clock
        self.window: deque[ClickRecord] = deque()
        self.unjudged = 0  # how many of the window's newest are not judged together yet
        self._span = together_window(self.together)
        self._next_round = 0.0  # clock() from which the next round may run
        self._last_round = 0.0
        self._last_add = 0.0

    def add(self, records: Sequence[ClickRecord]) -> None:
        if not records:
            return
        self.window.extend(records)
        self.unjudged += len(records)
        self._last_add = self.clock()
        self._prune(records[-1].clicked_at)

    def due_at(self) -> float | None:
        """The clock() at which the next round is due; None while no click waits for one."""
        if not self.unjudged:
            return None
        if self.unjudged * ROUND_READS >= len(self.window) - self.unjudged:
            return self._next_round
        # Under a heavy load: once no click came for a moment, or a window's span has passed.
        return max(self._next_round, min(self._last_add + self.together_every, self._last_round + self.span))

    @property
    def span(self) -> float:
        return self._span.total_seconds()

    def run(self) -> list[ClickRecord]:
        """Judge the waiting clicks together with the window before them; the clicks whose
        verdict changed (their reasons and score updated in place)."""
        started = self.clock()
        self._last_round = started
        window, waiting = self.window, self.unjudged
        try:
            clicks = list(islice(window, len(window) - waiting, None))
            # The window before the waiting clicks (copied in C); judge_together leaves out, for
            # each filter, those older than its own window before the first of `clicks`.
            before = list(islice(window, 0, len(window) - waiting))
            return judge_together(self.together, clicks, before) if clicks else []
        finally:  # judged, or given up on (a filter's bug): never the same round again at once
            self.unjudged = 0
            self._next_round = self.clock() + max(self.together_every, ROUND_SHARE * (self.clock() - started))
            if window:
                self._prune(window[-1].clicked_at)

    def _prune(self, newest: Any) -> None:
        """Forget the clicks no round needs any more: older than two windows before the newest, once
        every click is judged together (until then the waiting ones' window is kept), and beyond
        `capacity` the oldest judged ones."""
        window, cutoff = self.window, newest - self._span * 2
        while len(window) > self.unjudged and (
            len(window) > self.capacity or (not self.unjudged and window[0].clicked_at < cutoff)
        ):
            window.popleft()


# -- a click on the pipe: the fields the together-filters read, and back the ones a row is found by
def to_wire(record: ClickRecord) -> tuple[Any, ...]:
    t = record.target
    return (
        t.code, t.message_id, t.link_id, t.contact_id, t.campaign_id, t.sent_at, record.clicked_at, record.ip,
        record.user_agent, record.referer, record.probe, record.reasons, record.bot_score, record.sent_at,
        record.delivered_at, record.purpose,
    )  # fmt: skip


def from_wire(w: tuple[Any, ...]) -> ClickRecord:
    code, message_id, link_id, contact_id, campaign_id, target_sent_at, clicked_at, *rest = w
    ip, agent, referer, probe, reasons, score, sent_at, delivered_at, purpose = rest
    target = CodeTarget(code, "", message_id, link_id, contact_id, campaign_id, target_sent_at)
    return ClickRecord(
        target, clicked_at, ip, agent, referer, probe, tuple(reasons), score, sent_at, delivered_at, purpose
    )


def verdict_of(record: ClickRecord) -> tuple[Any, ...]:
    """What `update_verdicts` needs of a re-judged click: its row's keys and the new verdict."""
    t = record.target
    return (t.code, t.message_id, t.campaign_id, record.clicked_at, record.reasons, record.bot_score)


def from_verdict(v: tuple[Any, ...]) -> ClickRecord:
    code, message_id, campaign_id, clicked_at, reasons, score = v
    return ClickRecord(
        CodeTarget(code, "", message_id, 0, None, campaign_id),
        clicked_at,
        None,
        None,
        None,
        reasons=reasons,
        bot_score=score,
    )


def serve(conn: Any, together: Sequence[JudgesTogether], together_every: float) -> None:
    """The judge process: clicks in, re-judged verdicts out, until "close" (a last round) or the
    pipe's end."""
    rounds = Rounds(together, together_every=together_every)
    while True:
        due = rounds.due_at()
        timeout = None if due is None else max(due - rounds.clock(), 0.0)
        try:
            ready = conn.poll(timeout)
            message = conn.recv() if ready else None
        except (EOFError, OSError):  # the writer is gone
            return
        if message is not None:
            kind, body = message
            if kind == "clicks":
                rounds.add([from_wire(w) for w in body])
            elif kind == "close":
                try:
                    _answer(conn, rounds.run() if rounds.unjudged else [])
                except Exception as exc:
                    log.warning("judging clicks together failed", error=str(exc))
                conn.send(("closed", []))
                return
        due = rounds.due_at()
        if due is not None and rounds.clock() >= due:
            try:
                changed = rounds.run()
            except Exception as exc:  # a filter's bug: its verdicts are left as stored
                log.warning("judging clicks together failed", error=str(exc))
                continue
            _answer(conn, changed)


def _answer(conn: Any, changed: list[ClickRecord]) -> None:
    """The re-judged verdicts, PIECE at a time (each message is unpickled at once beside the
    redirect's event loop)."""
    for start in range(0, len(changed), PIECE):
        conn.send(("changed", [verdict_of(c) for c in changed[start : start + PIECE]]))


class Judge:
    """The writer's side of the judge process: `send()` stored clicks, re-judged verdicts arrive
    on a thread of their own and are handed to `on_changed` (from that thread) as `verdict_of`
    tuples (`from_verdict` makes a click of each, off that thread: it is the redirect's GIL)."""

    def __init__(
        self,
        together: Sequence[JudgesTogether],
        on_changed: Callable[[list[tuple[Any, ...]]], None],
        *,
        together_every: float = 0.25,
    ) -> None:
        self.together = tuple(together)
        self.together_every = together_every
        self.on_changed = on_changed
        self.restarts = 0
        self._conn: Any = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._closed: threading.Event | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the server's threads and sockets
        parent, child = context.Pipe()
        process = context.Process(
            target=serve, args=(child, self.together, self.together_every), name="textpulse-judge", daemon=True
        )
        process.start()
        child.close()
        self._conn, self._process, self._closed = parent, process, threading.Event()
        self._reader = threading.Thread(
            target=self._read, args=(parent, self._closed), name="judge-reader", daemon=True
        )
        self._reader.start()

    def _read(self, conn: Any, closed: threading.Event) -> None:
        """Until the judge's "closed" or the pipe's end; whatever else goes wrong is logged and the
        reading goes on (a reader that stopped would leave the judge blocked on a full pipe)."""
        try:
            while True:
                try:
                    kind, body = conn.recv()
                except (EOFError, OSError):
                    return
                except Exception as exc:  # a message that does not unpickle
                    log.warning("a message of the judge of clicks together was lost", error=str(exc))
                    continue
                if kind == "closed":
                    return
                try:
                    self.on_changed(list(body))
                except Exception as exc:
                    log.warning("re-judged verdicts were lost", clicks=len(body), error=str(exc))
        finally:
            closed.set()

    def send(self, records: Sequence[ClickRecord]) -> None:
        """Hand stored clicks to the judge (from the writer's thread); a judge that died is
        replaced, its window lost (logged)."""
        if not records:
            return
        with self._lock:
            reading = self._closed is not None and not self._closed.is_set()
            if self._process is None or not self._process.is_alive() or not reading:
                if self._process is not None:
                    self.restarts += 1
                    log.warning("the judge of clicks together stopped; starting another", restarts=self.restarts)
                    self._stop(self._process, self._conn)
                self.start()
            for start in range(0, len(records), PIECE):
                try:
                    self._conn.send(("clicks", [to_wire(r) for r in records[start : start + PIECE]]))
                except (BrokenPipeError, OSError) as exc:
                    log.warning(
                        "the judge of clicks together is gone", error=str(exc), clicks_not_judged=len(records) - start
                    )
                    return

    @staticmethod
    def _stop(process: Any, conn: Any) -> None:
        if process.is_alive():
            process.kill()
        process.join(5)
        conn.close()

    def close(self, timeout: float = 10.0) -> None:
        """A last round over what waits, its verdicts handed over, then the process ends."""
        with self._lock:
            process, conn, closed, reader = self._process, self._conn, self._closed, self._reader
            self._process = None
        if process is None:
            return
        deadline = time.monotonic() + timeout  # one deadline for the three waits
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("close", None))
        if closed is not None and not closed.wait(max(deadline - time.monotonic(), 0.0)):
            log.warning("the judge of clicks together did not finish its last round in time")
        process.join(max(deadline - time.monotonic(), 0.1))
        if process.is_alive():
            process.kill()
            process.join(5)
        conn.close()  # the reader (ending on the pipe's end) is a daemon thread
        if reader is not None:
            reader.join(max(deadline - time.monotonic(), 0.1))
