"""benchmarks/leaderboard_identity.py: which cells and lines of two leaderboards differ."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from leaderboard_identity import differences  # noqa: E402

BOARD = """# Leaderboard

Some text.

## x8

| method | PSNR | train s |
|---|---:|---:|
| A | 21.20 | 22 |
| B | 21.10 | 10 |

Footnote.
"""


def test_identical_boards_have_no_differences():
    assert differences(BOARD, BOARD) == []


def test_cells_are_named_by_table_row_and_column_and_other_lines_by_number():
    after = BOARD.replace("| 10 |", "| 11 |").replace("Footnote.", "Footnotes.")
    assert differences(BOARD, after) == [
        {"table": "x8", "row": "B", "column": "train s", "before": "10", "after": "11"},
        {"line": 12, "before": "Footnote.", "after": "Footnotes."},
    ]


def test_tables_of_another_shape_are_compared_line_by_line():
    after = BOARD.replace("| B | 21.10 | 10 |\n", "")
    found = differences(BOARD, after)
    assert {"line": 10, "before": "| B | 21.10 | 10 |", "after": ""} in found
