"""Command line: ``crosslab COMMAND [options]`` (or ``python -m crosslab COMMAND [options]``).

Each command lives in ``crosslab/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when
used, so ``python -m crosslab doctor`` does not pay for torch models it never loads.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import CrosslabError

COMMANDS = {
    "doctor": "check versions, device and offline assets",
    "features": "compute (or load) and cache a dataset's text and image features",
    "pipelines": "list the named pipelines: what each is and what it needs",
    "search": "search the embedded clip art with a named pipeline",
    "evaluate": "fit named pipelines and print test-split retrieval metrics",
    "index": "a vector store on disk (LanceDB): build DIR from pictures, search DIR",
    "collection": "index your own folder of pictures, then search it by words or by picture",
    "robustness": "test-split R@10 of named pipelines under corrupted captions and pictures, by severity",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crosslab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    argv = sys.argv[1:] if argv is None else argv
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # Only import the module of the command actually asked for.
        if argv and argv[0] == name:
            modules[name] = importlib.import_module(f".commands.{name}", __package__)
            modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except CrosslabError as e:
        print(f"crosslab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `python -m crosslab pipelines | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python's exit flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
