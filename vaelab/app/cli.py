"""The `vaelab` command line: train, evaluate, sample, datasets, gaps, sweep, report, compare, ledger.

Each command is a module of `vaelab.app.commands`. User errors (bad config, missing data, wrong run directory)
print one line and exit with status 2. A Ctrl-C (SIGINT) or a SIGTERM (`kill PID`, a scheduler's time limit)
stops a command the same way, without a traceback: `vaelab train` keeps its last checkpoint, records the session
and prints how to resume; the exit status is 128 + the signal's number (130, 143). An evaluation stopped by its
`--stop-after` before a batch it could not finish keeps its saved batches and exits with status 75 (`OUT_OF_TIME`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from vaelab.app.argtypes import positive_int
from vaelab.app.commands import (
    EPILOG,
    compare,
    datasets,
    evaluate,
    gaps,
    ledger,
    report,
    sample,
    sweep,
    train,
)
from vaelab.errors import OutOfTime, TrainingDiverged, UserError
from vaelab.progress import DEFAULT_INTERVAL_S, INTERVAL_VARIABLE

#: The exit status of a command stopped by its `--stop-after` with work left (sysexits' EX_TEMPFAIL: run it again).
OUT_OF_TIME = 75

#: name -> module, in the order `vaelab --help` lists them.
COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "sample": sample,
    "datasets": datasets,
    "gaps": gaps,  # the inference-gap analysis (Cremer et al. 2018)
    "sweep": sweep,  # a grid of runs tabulated (SIWAE's K x T studies)
    "report": report,  # AIWAE Table 1 rows (NLL, NVLB, var and gen gaps, active units)
    "compare": compare,  # two runs paired on the same points (mean difference and its se)
    "ledger": ledger,  # results/ (shipped runs) and its generated README
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`vaelab CMD: error: ...`), without the usage text."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common(p: argparse.ArgumentParser) -> None:
    """The options of every command that computes: --device, --threads, --no-progress."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, or auto (default: the config's, auto)")
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for torch (default: the config's 'threads', else $OMP_NUM_THREADS, else 1: more threads "
        "thrash when other jobs hold the cores; see README)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress: the bars on a terminal and, when stderr is a file or pipe, the progress lines written "
        f"every ${INTERVAL_VARIABLE} s (default {DEFAULT_INTERVAL_S:.0f}); results, warnings and training's "
        "per-epoch lines stay",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vaelab", description="Latent variable models with rich posteriors and priors.", epilog=EPILOG
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub, add_common)
    return parser


class Stopped(KeyboardInterrupt):
    """A SIGTERM, raised where the process is, as Ctrl-C's KeyboardInterrupt is (so every `finally` runs)."""


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into `Stopped` (only the main thread can set a handler). A job started in the background by
    a script ignores SIGINT (the shell's rule for `cmd &`), so `kill PID` is how such a run is stopped cleanly."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: object) -> None:
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """Run `vaelab` with `argv` (default: the process's arguments); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad argument, already printed in one line (2)
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if "threads" in vars(args):  # a command that computes
            from vaelab.allocator import tune_malloc
            from vaelab.threads import start_command

            tune_malloc()  # glibc: keep freed tensor memory for the next step (VAELAB_MALLOC_TUNING=0: off)
            start_command(args.threads)
            _stop_on_sigterm()
        return COMMANDS[args.command].command(args)
    except KeyboardInterrupt as err:
        signum = signal.SIGTERM if isinstance(err, Stopped) else signal.SIGINT
        print(f"vaelab {args.command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except OutOfTime as err:  # every rank stopped together; rank 0 says so
        from vaelab import distributed

        if distributed.world()[0] == 0:
            print(f"vaelab {args.command}: {err}", file=sys.stderr)
        return OUT_OF_TIME
    except (UserError, TrainingDiverged) as err:
        if not getattr(err, "raised_on_rank0", False):  # under torchrun, an error of rank 0's is printed there
            print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
