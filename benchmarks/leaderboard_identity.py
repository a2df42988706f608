"""Run one config in two checkouts and compare their ``leaderboard.md`` cell by cell.

    .venv/bin/python benchmarks/leaderboard_identity.py --before /tmp/before-clone --after . \\
        --work /tmp/lb-identity [--config config/test.yaml] [--methods bicubic rcan ...] [--cores 1]

For a change that must not change behaviour (a refactor): each checkout runs the workflow in
its own scratch directory (``<work>/before``, ``<work>/after``) with its own ``src/`` first on
``PYTHONPATH`` (the installed package points at one checkout only), under ``nice``. A finished
scratch directory is reused (Snakemake reruns nothing), so ``--sides before`` can be run ahead.
Prints every line and table cell that differs (table, row, column, both values), and exit
status 0 when the files are byte-identical, 1 otherwise. Columns measured by the clock (train
and inference seconds) are not deterministic; name them with ``--ignore-columns`` to exit 0
when only those differ (their cells are still printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

SIDES = ("before", "after")


def run_side(checkout: Path, scratch: Path, config: dict, cores: int) -> Path:
    """The workflow of ``checkout`` on ``config`` in ``scratch``; returns its leaderboard.md."""
    scratch.mkdir(parents=True, exist_ok=True)
    config_file = scratch / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = ["nice", "-n", "10", sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile")]
    cmd += ["--directory", str(scratch), "--cores", str(cores), "--configfile", str(config_file)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout / "src"), os.environ.get("PYTHONPATH", "")])}
    log = scratch / "snakemake.log"
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        sys.exit(f"{checkout}: the workflow failed (exit status {done.returncode}); see {log}")
    return scratch / config.get("results", "results") / "leaderboard.md"


def split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(lines: list[str]) -> list[tuple[str, list[str], list[list[str]], range]]:
    """The markdown tables of a page: (heading above, header cells, body rows, line numbers)."""
    found, heading, i = [], "", 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        is_table = lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1].strip()) <= set("|-: ")
        if not is_table:
            i += 1
            continue
        end = i + 2
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        found.append((heading, split_row(lines[i]), [split_row(r) for r in lines[i + 2 : end]], range(i, end)))
        i = end
    return found


def differences(before: str, after: str) -> list[dict]:
    """Each differing table cell ({table, row, column, before, after}) or, outside tables and
    where the tables' shapes differ, each differing line ({line, before, after})."""
    a, b = before.splitlines(), after.splitlines()
    ta, tb = tables(a), tables(b)
    in_tables = set()
    found = []
    same_layout = len(ta) == len(tb) and all(
        x[1] == y[1] and len(x[2]) == len(y[2]) and x[3] == y[3] for x, y in zip(ta, tb)
    )
    if same_layout:
        for (heading, header, rows_a, lines), (_, _, rows_b, _) in zip(ta, tb):
            in_tables.update(lines)
            for row_a, row_b in zip(rows_a, rows_b):
                for column, cell_a, cell_b in zip(header, row_a, row_b):
                    if cell_a != cell_b:
                        found.append(
                            {"table": heading, "row": row_a[0], "column": column, "before": cell_a, "after": cell_b}
                        )
                if len(row_a) != len(row_b):
                    found.append(
                        {"table": heading, "row": row_a[0], "column": "(cell count)", "before": row_a, "after": row_b}
                    )
    for n in range(max(len(a), len(b))):
        if n in in_tables:
            continue
        line_a, line_b = (a[n] if n < len(a) else None), (b[n] if n < len(b) else None)
        if line_a != line_b:
            found.append({"line": n + 1, "before": line_a, "after": line_b})
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True, help="checkout of the reference version")
    p.add_argument("--after", type=Path, required=True, help="checkout of the changed version")
    p.add_argument("--work", type=Path, required=True, help="scratch directory (before/ and after/ inside)")
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "test.yaml")
    p.add_argument("--methods", nargs="+", help="replace the config's methods list")
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="run only these (default: both)")
    p.add_argument("--ignore-columns", nargs="*", default=[], help="columns allowed to differ (clock-measured)")
    args = p.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    if args.methods:
        config["methods"] = args.methods
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    boards = {side: run_side(checkouts[side], args.work.resolve() / side, config, args.cores) for side in args.sides}
    if len(boards) < 2:
        print(f"{args.sides[0]}: {boards[args.sides[0]]}")
        return 0
    text = {side: path.read_bytes() for side, path in boards.items()}
    if text["before"] == text["after"]:
        print(f"byte-identical: {boards['before']} and {boards['after']} ({len(text['after'])} bytes)")
        return 0
    found = differences(text["before"].decode(), text["after"].decode())
    for d in found:
        where = f"line {d['line']}" if "line" in d else f"[{d['table']}] row {d['row']!r}, column {d['column']!r}"
        print(f"{where}: {d['before']!r} -> {d['after']!r}")
    ignored = set(args.ignore_columns)
    real = [d for d in found if d.get("column") not in ignored]
    print(f"{len(found)} differences, {len(found) - len(real)} in ignored columns {sorted(ignored)}")
    return 1 if real else 0


if __name__ == "__main__":
    sys.exit(main())
