"""Live progress on the driver's console while `trainer.fit()` blocks.

Rank 0's training loop posts small events to a `ProgressBoard` actor; a `LiveConsole` thread on the driver
drains it a few times a second. On a terminal it draws tqdm bars (one per epoch with step, images/s, loss, ε and
ETA; one for the final evaluation); otherwise it prints plain lines (one every `run.log_every_steps` steps, one
per epoch, one per phase) without ANSI codes. Whatever the output, a silence longer than `heartbeat_s` prints
what the run is waiting for, so nothing is quiet for long.

Events are dicts: {"kind": "phase", "text"}, {"kind": "step", "epoch", "i", "steps", "step", "loss", "eps",
"images_per_s"}, {"kind": "epoch", "line"}, {"kind": "eval", "done", "total", "text"}.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import Any, TextIO

import ray

from hexray.train.metrics import format_duration


@ray.remote(num_cpus=0)
class ProgressBoard:
    """A bounded mailbox: posts never block the poster (fire-and-forget `.remote`), old events drop first."""

    def __init__(self, capacity: int = 1000) -> None:
        self.events: collections.deque = collections.deque(maxlen=capacity)

    def post(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out = list(self.events)
        self.events.clear()
        return out


class Poster:
    """Rank 0's side: posts steps at most every `every_s` seconds (and at each `log_every` step), phases always."""

    def __init__(self, board: Any, *, log_every: int, every_s: float = 0.5) -> None:
        self.board, self.log_every, self.every_s = board, log_every, every_s
        self._last = 0.0

    def phase(self, text: str) -> None:
        if self.board is not None:
            self.board.post.remote({"kind": "phase", "text": text})

    def epoch(self, line: str) -> None:
        if self.board is not None:
            self.board.post.remote({"kind": "epoch", "line": line})

    def eval(self, done: int, total: int, text: str) -> None:
        if self.board is not None:
            self.board.post.remote({"kind": "eval", "done": done, "total": total, "text": text})

    def due(self, *, i: int, steps: int, step: int) -> bool:
        """Whether step `step` (batch `i` of `steps`) should be posted; ask before computing what to post (reading
        the loss syncs the device)."""
        if self.board is None:
            return False
        if (self.log_every and step % self.log_every == 0) or i + 1 == steps:
            return True
        return time.monotonic() - self._last >= self.every_s

    def step(self, *, epoch: int, i: int, steps: int, step: int, **values: float) -> None:
        self._last = time.monotonic()
        self.board.post.remote({"kind": "step", "epoch": epoch, "i": i + 1, "steps": steps, "step": step,
                                **values})


def _draws_bars(stream: TextIO) -> bool:
    """A terminal that reports a width: a pseudo-terminal without one (0 columns) would render empty bars."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns >= 40
    except (OSError, ValueError, AttributeError):
        return False


class LiveConsole(threading.Thread):
    """Driver side: renders the board's events (see module docstring)."""

    def __init__(self, board: Any, *, total_epochs: int, log_every: int, stream: TextIO | None = None,
                 tty: bool | None = None, interval: float = 0.25, heartbeat_s: float = 10.0) -> None:
        super().__init__(daemon=True, name="hexray-console")
        self.board, self.total_epochs, self.log_every = board, total_epochs, log_every
        self.stream = stream or sys.stdout
        self.tty = _draws_bars(self.stream) if tty is None else tty
        self.interval, self.heartbeat_s = interval, heartbeat_s
        self.phase = "starting the training workers"
        self._detail = ""  # the latest step of a training phase, for the heartbeat line
        self._stop_event = threading.Event()
        self._last_output = self._phase_since = time.monotonic()
        self._bar: Any = None
        self._bar_kind = ""

    # ------------------------------------------------------------------ output
    def _print(self, line: str) -> None:
        if self.tty and self._bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last_output = time.monotonic()

    def _open_bar(self, kind: str, total: int, desc: str) -> Any:
        from tqdm import tqdm

        if self._bar is not None and self._bar_kind == kind and self._bar.desc == desc:
            return self._bar
        self._close_bar()
        self._bar = tqdm(total=total, desc=desc, file=self.stream, unit="step" if kind == "epoch" else "stage",
                         dynamic_ncols=True, leave=False,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}]"
                                    "{postfix}")
        self._bar_kind = kind
        return self._bar

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ events
    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind != "step":
            self._detail = ""
        if kind == "phase":
            self.phase, self._phase_since = event["text"], time.monotonic()
            if not self.tty:
                self._print(event["text"])
            elif self._bar is not None:
                self._bar.set_postfix_str(event["text"], refresh=True)
            else:
                self._print(event["text"])
        elif kind == "step":
            self._step(event)
        elif kind == "epoch":
            self._close_bar()
            self._print(event["line"])
            self.phase, self._phase_since = "loading the next epoch's first batch", time.monotonic()
        elif kind == "eval":
            text = f"final evaluation: {event['text']} ({event['done']}/{event['total']})"
            self.phase, self._phase_since = text, time.monotonic()
            if self.tty:
                bar = self._open_bar("eval", int(event["total"]), "final evaluation")
                bar.n = int(event["done"])
                bar.set_postfix_str(event["text"], refresh=True)
            else:
                self._print(text)

    def _step(self, e: dict[str, Any]) -> None:
        parts = [f"loss {e['loss']:.4g}" if "loss" in e else "", f"ε {e['eps']:.3f}" if "eps" in e else "",
                 f"{e['images_per_s']:.0f} img/s" if "images_per_s" in e else ""]
        stats = ", ".join(p for p in parts if p)
        phase = f"training epoch {e['epoch']}/{self.total_epochs}"
        if phase != self.phase:  # the heartbeat counts from the epoch's start, not from the latest step
            self.phase, self._phase_since = phase, time.monotonic()
        self._detail = f"step {e['i']}/{e['steps']}" + (f" | {stats}" if stats else "")
        if self.tty:
            bar = self._open_bar("epoch", int(e["steps"]), f"epoch {e['epoch']}/{self.total_epochs}")
            bar.n = int(e["i"])
            bar.set_postfix_str(stats, refresh=True)
            self._last_output = time.monotonic()
        elif self.log_every and e["step"] % self.log_every == 0:
            self._print(f"epoch {e['epoch']}/{self.total_epochs} step {e['i']}/{e['steps']} | {stats}")

    # ------------------------------------------------------------------ loop
    def poll(self) -> None:
        try:
            events = ray.get(self.board.drain.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - the board is gone (run over, Ray shutting down): nothing to show
            events = []
        for event in events:
            self.handle(event)
        now = time.monotonic()
        if self.tty and self._bar is not None:
            self._bar.refresh()  # the elapsed clock moves even between events
        elif now - self._last_output >= self.heartbeat_s:
            detail = f", {self._detail}" if self._detail else ""
            self._print(f"... {self.phase}{detail} ({format_duration(now - self._phase_since)})")

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)
        self.poll()
        self._close_bar()
