"""A quiet console for `hexray train` and `hexray sweep`: Ray's start-up INFO/WARNING lines, Ray Data's planning
notes, the workers' forwarded logs and the raylet's worker-pool warnings go to the log file of the run (or sweep:
`<run or experiment dir>/hexray.log`) instead of the user's terminal; errors still reach both. `train --verbose`
and `sweep --ray-logs` leave Ray's console output as Ray prints it (and still write the file).

Ray prints through two channels: Python logging (loggers `ray` and `ray.data`, each with its own console handler
and `propagate = False`) and plain writes to sys.stdout / sys.stderr of what the raylet publishes (`(raylet) ...`)
and of the workers' forwarded logs (`(RayTrainWorker pid=..., ip=...) ...`, deduplicated by Ray). The first is
re-levelled per handler; the second is filtered line by line, so the log file holds every worker's output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from hexray import storage

LOG_FILE = "hexray.log"
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# (raylet) ... / (Actor pid=1, ip=...) ..., and Tune's pointer to its own TensorBoard copy in /tmp/ray (a sweep
# prints where the trials' event files really are)
_RAY_LINE = re.compile(r"^\s*\((?:raylet|autoscaler|.*?\bpid=\d+)|^To visualize your results with TensorBoard")


class _LineFilter(io.TextIOBase):
    """A text stream that passes lines through to `target`, except Ray's own (`(raylet) ...`), which go to `log`."""

    def __init__(self, target: TextIO, log: TextIO) -> None:
        self.target, self.log = target, log
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if _RAY_LINE.match(_ANSI.sub("", line)):
                self.log.write(_ANSI.sub("", line) + "\n")
                self.log.flush()
            else:
                self.target.write(line + "\n")
        if self._partial and not _RAY_LINE.match(_ANSI.sub("", self._partial)) and "\r" in self._partial:
            self.target.write(self._partial)  # a progress bar redrawing its line: no newline will come
            self._partial = ""
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


class _AnsiFree(io.TextIOBase):
    """Writes to `target` without ANSI colour codes (Ray colours parts of its messages)."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(_ANSI.sub("", text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def quiet_console(run_dir: str, *, verbose: bool = False) -> Iterator[str]:
    """Route Ray's console chatter into the run's log file while the block runs; yields the log's location. A run
    directory on object storage gets the file uploaded at the end (object stores cannot append)."""
    remote = storage.is_remote(run_dir)
    target = storage.join(run_dir, LOG_FILE)
    local = os.path.join(tempfile.mkdtemp(prefix="hexray-log-"), LOG_FILE) if remote else target
    if remote and storage.is_file(target):  # a resumed run: its log goes on where it stopped
        with open(local, "wb") as f:
            f.write(storage.read_bytes(target))
    log = open(local, "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    file_handler = logging.StreamHandler(_AnsiFree(log))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.setLevel(logging.INFO)
    saved: list[tuple[Any, int]] = []
    loggers = [logging.getLogger(name) for name in RAY_LOGGERS]
    for logger in loggers:
        logger.addHandler(file_handler)
        if not verbose:
            for handler in logger.handlers:
                if handler is not file_handler and isinstance(handler, logging.StreamHandler) \
                        and not isinstance(handler, logging.FileHandler):  # a console handler
                    saved.append((handler, handler.level))
                    handler.setLevel(logging.ERROR)
    streams = (sys.stdout, sys.stderr)
    if not verbose:
        sys.stdout, sys.stderr = _LineFilter(sys.stdout, log), _LineFilter(sys.stderr, log)
    try:
        yield target
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _LineFilter) and stream._partial:  # text still waiting for its newline
                stream.target.write(stream._partial)
        sys.stdout, sys.stderr = streams
        for handler, level in saved:
            handler.setLevel(level)
        for logger in loggers:
            logger.removeHandler(file_handler)
        log.close()
        if remote:
            with open(local, "rb") as f:
                storage.write_bytes(target, f.read())
