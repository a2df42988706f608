"""Command line: `emsrbench new-method NAME`, `emsrbench methods`, `emsrbench phantom PATH`."""

from __future__ import annotations

import argparse
import sys

from .errors import EmsrError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emsrbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_new = sub.add_parser("new-method", help="write a working method template (with a test) under methods/")
    p_new.add_argument("name")
    p_new.add_argument("--methods-dir", default=None)
    sub.add_parser("methods", help="list the methods found under methods/ (validating each)")
    p_ph = sub.add_parser("phantom", help="write a phantom EM volume in CREMI format")
    p_ph.add_argument("path")
    p_ph.add_argument("--shape", type=int, nargs=3, default=[16, 256, 256], metavar=("Z", "Y", "X"))
    p_ph.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "new-method":
            from .methods import METHODS_DIR
            from .scaffold import new_method

            folder = new_method(args.name, args.methods_dir or METHODS_DIR)
            print(f"wrote {folder}: edit model.py and method.yaml; `snakemake -n` now lists its jobs")
        elif args.command == "methods":
            from .methods import discover

            for m in discover().values():
                print(
                    f"{m.name:12s} {m.family:12s} slices={m.slices} scales={list(m.scales)} "
                    f"trains={m.trains}  {m.display_name}"
                )
        elif args.command == "phantom":
            from .phantom import write

            write(args.path, tuple(args.shape), seed=args.seed)
            print(f"wrote {args.path}")
    except EmsrError as err:
        print(f"emsrbench: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
