"""The `vaelab` command line: train, evaluate, sample, datasets, gaps, sweep, report, compare, ledger.

Each command is a module of `vaelab.app.commands`. User errors (bad config, missing data, wrong run directory)
print one line and exit with status 2; a Ctrl-C prints how to resume and exits with 130.
"""

from __future__ import annotations

import argparse
import sys

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
from vaelab.errors import TrainingDiverged, UserError
from vaelab.progress import DEFAULT_INTERVAL_S, INTERVAL_VARIABLE

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
        return COMMANDS[args.command].command(args)
    except (UserError, TrainingDiverged) as err:
        if not getattr(err, "raised_on_rank0", False):  # under torchrun, an error of rank 0's is printed there
            print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
