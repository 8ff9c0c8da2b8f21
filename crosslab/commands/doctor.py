"""``python -m crosslab doctor``: print the environment check; exit 0 when everything is ok."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..doctor import doctor

    report = doctor()
    print(json.dumps(report.as_dicts(), indent=2) if args.json else report)
    return 0 if report.ok else 1
