"""Progress reports for slow loops, on a terminal and in a log file alike.

`progress(...)` returns a tqdm bar. On a terminal (or in a notebook) it is tqdm's usual bar. When stderr is not a
terminal (`vaelab evaluate RUN > log 2>&1`, `nohup`, a pipe) tqdm would either draw '\\r'-refreshed bars into the
file or, with `disable=None`, nothing at all; here the same tqdm bar instead writes plain lines, the first after
`VAELAB_PROGRESS_INTERVAL` seconds (default 30), then at most one per interval, and a final one when the loop
ends (a loop shorter than the interval writes nothing):

    IS log-likelihood: 40/100 batches (40%), 12:03 elapsed, ~18:05 left

`enabled=False` (the CLI's --no-progress, `progress=False` in the API) shows nothing.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.autonotebook import tqdm as _notebook_or_std  # after tqdm.auto, which silences its notebook warning
from tqdm.std import tqdm as std_tqdm

from vaelab.errors import ConfigError

#: The environment variable that sets the seconds between two progress lines in a log file.
INTERVAL_VARIABLE = "VAELAB_PROGRESS_INTERVAL"
#: Seconds between two progress lines in a log file unless `INTERVAL_VARIABLE` says otherwise.
DEFAULT_INTERVAL_S = 30.0

_KNOWN_TOTAL = "{desc}: {n_fmt}/{total_fmt} {units} ({percentage:.0f}%), {elapsed} elapsed, ~{remaining} left{postfix}"
_UNKNOWN_TOTAL = "{desc}: {n_fmt} {units}, {elapsed} elapsed, {rate_fmt}{postfix}"
#: Whether this is a notebook, where tqdm draws a widget whatever stderr is.
_NOTEBOOK = _notebook_or_std is not std_tqdm


def interval_s() -> float:
    """Seconds between two progress lines in a log file: `$VAELAB_PROGRESS_INTERVAL`, else 30."""
    raw = os.environ.get(INTERVAL_VARIABLE)
    if raw is None or not raw.strip():
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{INTERVAL_VARIABLE} must be a number of seconds >= 0, got {raw!r}")
    return value


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> std_tqdm:
    """A tqdm bar over `iterable` (or one to `update` by hand, of `total` `unit`s) labelled `desc`, written to
    `file` (default: sys.stderr): tqdm's bar on a terminal or in a notebook (`leave`: keep it when done), plain
    lines at most every `interval_s()` seconds elsewhere (module docstring), nothing when not `enabled`.
    `kwargs` go to tqdm (`initial`, `unit_scale`, ...)."""
    if not enabled:
        return std_tqdm(iterable, desc=desc, total=total, unit=unit, disable=True, **kwargs)
    stream = sys.stderr if file is None else file
    if _NOTEBOOK or _is_terminal(stream):  # a notebook's widget, or a terminal's bar, as tqdm draws
        where = {} if file is None else {"file": file}
        return auto_tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=False, **where, **kwargs)
    every = interval_s()
    return _LineBar(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=_Lines(stream),
        mininterval=every,
        maxinterval=max(every, 1e-3),  # tqdm's monitor thread: refresh a stalled bar no more often than this
        delay=every,
        position=0,  # no cursor movement for nested bars
        leave=True,  # the final line; `_LineBar.close` leaves it out when it would repeat the last one
        **kwargs,
    )


def write(line: str, file: IO[str] | None = None) -> None:
    """Print `line` (to `file`, default sys.stderr) without breaking a terminal's progress bars."""
    auto_tqdm.write(line, file=sys.stderr if file is None else file)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _plural(unit: str) -> str:
    """'batch' -> 'batches', 'epoch' -> 'epochs'; a symbol ('B', 'it') stays."""
    if len(unit) <= 2:
        return unit
    return unit + ("es" if unit.endswith(("tch", "sh", "ss", "x")) else "s")


class _LineBar(std_tqdm):
    """A tqdm bar that reports in whole lines (through `_Lines`), only on tqdm's own interval: setting a postfix
    or description does not print a line of its own, and closing prints the final state unless it was the last
    line printed."""

    @staticmethod
    def format_meter(n, total, elapsed, unit="it", **kwargs):  # noqa: D102 (tqdm's, in a line's format)
        units = _plural(unit).replace("{", "{{").replace("}", "}}")
        kwargs["bar_format"] = (_KNOWN_TOTAL if total else _UNKNOWN_TOTAL).replace("{units}", units)
        return std_tqdm.format_meter(n, total, elapsed, unit=unit, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):  # noqa: D102
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):  # noqa: D102
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):  # noqa: D102
        super().set_description(desc, refresh=False)

    def set_description_str(self, desc=None, refresh=True):  # noqa: D102
        super().set_description_str(desc, refresh=False)

    def close(self):  # noqa: D102
        if not self.disable and self.n == getattr(self, "last_print_n", None):
            self.leave = False  # the last line printed is the final state already
        super().close()


class _Lines:
    """A file for tqdm that turns its '\\r'-refreshed status into newline-terminated lines on `stream`: each
    status, without the padding tqdm adds, is one line; blank ones (tqdm clearing its bar) are dropped, and so
    is a line identical to the one before."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last = ""

    def write(self, s: str) -> int:
        for piece in s.replace("\r", "\n").split("\n"):
            line = piece.rstrip()
            if line and line != self._last:
                self.stream.write(line + "\n")
                self._last = line
        self.flush()
        return len(s)

    def flush(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()
