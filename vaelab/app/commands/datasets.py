"""`vaelab datasets`: the registered datasets, where each was found; --download NAME fetches one."""

from __future__ import annotations

import argparse

from vaelab.app.commands import EPILOG, AddCommon, Subparsers


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """Add the command's subparser to `sub`."""
    d = sub.add_parser(
        "datasets",
        help="list datasets and where each was found",
        description="List the registered datasets, whether a copy was found, and where. Looks in: an explicit "
        "path, $VAELAB_DATA, the user cache (~/.cache/vaelab), system dataset directories, the bundled copy.",
        epilog=EPILOG,
    )
    d.add_argument("--download", metavar="NAME", help="download NAME into the user cache (checksummed)")


def command(args: argparse.Namespace) -> int:
    """Run `vaelab datasets`; the exit status."""
    from vaelab.data import download, list_datasets

    if args.download:
        print(f"downloaded to {download(args.download)}")
        return 0
    rows = list_datasets()
    width = max(len(r.name) for r in rows)
    for r in rows:
        where = r.location if r.available else (r.note or "not found")
        print(f"{r.name:<{width}}  {'yes' if r.available else 'no ':<3}  {r.description}\n{'':<{width}}       {where}")
    return 0
