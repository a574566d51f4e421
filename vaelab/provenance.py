"""Provenance of a run: what produced its numbers (command, commit, machine, threads, wall time).

`provenance.json` in a run directory holds one entry per `vaelab train` invocation on it (the first run and
every `--resume`), so a result's total wall time and the machines it ran on can be read back:

    {"sessions": [{"command": [...], "commit": "abc123", "dirty": false, "started": "...", "finished": "...",
                   "wall_seconds": 3600.0, "threads": 1, "machine": {...}, "torch": "2.13.0", ...}]}
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

FILE = "provenance.json"


def git_commit(where: Path | None = None) -> tuple[str | None, bool]:
    """(HEAD commit, dirty) of the git checkout holding the vaelab package, or (None, False) outside one."""
    where = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "--", ":/vaelab", ":/configs"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, False
    return head or None, bool(status.strip())


def machine() -> dict:
    """Host name, CPU model, core count, memory and accelerator, as far as they can be read."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "system": platform.platform()}
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name(0)
    return info


_SESSIONS = itertools.count()  # this process's sessions: two in one second (a fit, then its resume) stay two


def start_session(run_dir: Path, device: torch.device) -> dict:
    """The entry for this invocation (not yet written)."""
    commit, dirty = git_commit()
    return {
        "id": f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_SESSIONS)}",  # unique within the second too
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "cwd": os.getcwd(),
        "commit": commit,
        "dirty": dirty,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
        "machine": machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "_t0": time.perf_counter(),
    }


def record_session(run_dir: Path, session: dict, finished: bool = False, **extra) -> None:
    """Write `session` into the run's provenance file, replacing its earlier record (same `id`), with its wall
    time so far and `extra` (epochs, steps). Called at every checkpoint (`finished` False: an entry a kill
    leaves behind still says how far the session got) and once at its end."""
    entry = {k: v for k, v in session.items() if not k.startswith("_")}
    entry["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z") if finished else None
    entry["wall_seconds"] = round(time.perf_counter() - session["_t0"], 1)
    entry.update(extra)
    path = Path(run_dir) / FILE
    data = read(run_dir)
    data["sessions"] = [s for s in data["sessions"] if s.get("id") != entry["id"]] + [entry]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def finish_session(run_dir: Path, session: dict, **extra) -> None:
    """The session's final record."""
    record_session(run_dir, session, finished=True, **extra)


def read(run_dir: Path) -> dict:
    path = Path(run_dir) / FILE
    if path.is_file():
        data = json.loads(path.read_text())
        data.setdefault("sessions", [])
        return data
    return {"sessions": []}
