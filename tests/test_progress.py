"""Progress reports (vaelab.progress): tqdm's bar on a terminal; in a log file or a pipe, plain newline-terminated
lines at most every VAELAB_PROGRESS_INTERVAL seconds and a final one; nothing when disabled. End to end,
`vaelab evaluate` with stderr redirected to a file writes progress lines there."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import binary_images, one_thread, tiny_vae  # noqa: F401 (one_thread: a module-wide fixture)

import vaelab
from vaelab.errors import ConfigError
from vaelab.progress import INTERVAL_VARIABLE, progress

TESTS = Path(__file__).resolve().parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _counts(text: str, desc: str, total: int, units: str) -> list[int]:
    """The counts of `text`'s progress lines, each checked to be a whole line of the log format."""
    assert "\r" not in text and text.endswith("\n")
    pattern = re.compile(rf"{re.escape(desc)}: (\d+)/{total} {units} \((\d+)%\), \S+ elapsed, ~\S+ left")
    counts = []
    for line in text.splitlines():
        m = pattern.fullmatch(line)
        assert m, f"not a progress line: {line!r}"
        assert int(m[2]) == round(100 * int(m[1]) / total)
        counts.append(int(m[1]))
    return counts


def test_a_log_file_gets_whole_lines_with_counts(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    out = io.StringIO()
    seen = [i for i in progress(range(12), desc="IS log p(x)", unit="batch", file=out)]
    assert seen == list(range(12))  # the items pass through
    counts = _counts(out.getvalue(), "IS log p(x)", 12, "batches")
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] == 12  # ends with the final state, once
    assert counts.count(12) == 1


def test_lines_come_at_most_once_per_interval_and_a_postfix_prints_none(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0.2")
    out = io.StringIO()
    bar = progress(range(40), desc="AIS", unit="temp", file=out)
    for _ in bar:
        bar.set_postfix(loss=1.0)  # on a terminal this redraws the bar; in a log it must not add a line
        time.sleep(0.01)
    counts = _counts(out.getvalue().replace(", loss=1", ""), "AIS", 40, "temps")
    assert counts[-1] == 40 and len(counts) < 20  # ~0.4 s over 0.2 s intervals: a few lines, not one per item

    monkeypatch.setenv(INTERVAL_VARIABLE, "60")
    quiet = io.StringIO()
    for _ in progress(range(40), desc="fast", unit="batch", file=quiet):
        pass
    assert quiet.getvalue() == ""  # a loop shorter than the interval reports nothing


@pytest.mark.parametrize(("unit", "units"), [("batch", "batches"), ("epoch", "epochs"), ("pixel", "pixels")])
def test_units_are_plural_in_a_line(monkeypatch, unit, units):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    out = io.StringIO()
    list(progress(range(3), desc="d", unit=unit, file=out))
    assert _counts(out.getvalue(), "d", 3, units)[-1] == 3


def test_an_unknown_total_counts_without_a_percentage(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    out = io.StringIO()
    with progress(desc="q* FFG", unit="step", file=out) as bar:
        for _ in range(5):
            bar.update()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[-1].startswith("q* FFG: 5 steps, ") and "elapsed" in lines[-1]


def test_disabled_writes_nothing(monkeypatch, capsys):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    for file in (io.StringIO(), Terminal()):
        assert list(progress(range(5), desc="off", unit="batch", enabled=False, file=file)) == list(range(5))
        assert file.getvalue() == ""
    list(progress(range(5), desc="off", enabled=False))  # the default stream, sys.stderr
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_tqdms_bar(monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "60")  # the interval is the log file's, not the terminal's
    term = Terminal()
    list(progress(range(5), desc="IS", unit="batch", file=term, leave=True))
    assert "\r" in term.getvalue() and "5/5" in term.getvalue() and "batch/s" in term.getvalue()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_interval_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(INTERVAL_VARIABLE, value)
    with pytest.raises(ConfigError, match=INTERVAL_VARIABLE):
        progress(range(3), desc="x", file=io.StringIO())


def test_evaluate_with_stderr_in_a_file_writes_progress_lines(tmp_path):
    x = binary_images(24, seed=1)
    torch.save(x, tmp_path / "x.pt")
    run = tmp_path / "run"
    vaelab.fit(tiny_vae(), "elbo", binary_images(64), epochs=1, batch_size=16, run_dir=run, progress=False)
    env = {**os.environ, INTERVAL_VARIABLE: "0", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])  # helpers
    log = tmp_path / "log"
    with open(log, "w") as err:
        cmd = [sys.executable, "-m", "vaelab.cli", "evaluate", str(run), "--data", str(tmp_path / "x.pt")]
        proc = subprocess.run([*cmd, "--samples", "20", "--batch-size", "4"], stdout=subprocess.PIPE, stderr=err,
                              text=True, env=env, timeout=300)  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "log p(x)" in proc.stdout and "batches (" not in proc.stdout  # progress goes to stderr only
    assert "\r" not in text
    progress_lines = [line for line in text.splitlines() if re.search(r": \d+/6 batches \(\d+%\)", line)]
    assert progress_lines and progress_lines[-1].split(": ")[1].startswith("6/6 batches (100%)"), text


def test_training_progress_shows_no_nan_for_epochs_without_validation(monkeypatch, capsys, tmp_path):
    """With validation every 2nd epoch, the epochs between show the training loss and no 'valid=nan'."""
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    vaelab.fit(tiny_vae(), "elbo", binary_images(32), epochs=3, batch_size=16, run_dir=tmp_path / "run",
               validate_every=2, progress=True)  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training: ")]
    assert lines and not any("nan" in line for line in lines), lines
    assert any("valid=" in line for line in lines) and any("valid=" not in line for line in lines), lines
