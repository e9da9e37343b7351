"""Render the measured matrices (written by the hardening tests to .tmp/hardening-results/) as Markdown.

Usage: .venv/bin/python tests/hardening/report.py  -> prints the two tables for docs/reliability.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / ".tmp" / "hardening-results"
SHORT = {"converged": "✅ converged", "clear error": "⚠️ clear error", "fails before any write": "✅"}


def load(name):
    path = RESULTS / ("%s.jsonl" % name)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(records, rows, cols):
    cell = {(r["row"], r["col"]): SHORT.get(r["outcome"], r["outcome"]) for r in records}
    out = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        out.append("| %s | " % row + " | ".join(cell.get((row, c), "❌ failing") for c in cols) + " |")
    return "\n".join(out)


def main():
    faults = load("faults")
    if faults:
        rows = list(dict.fromkeys(r["row"] for r in faults))
        cols = list(dict.fromkeys(r["col"] for r in faults))
        print(table(faults, rows, cols))
        print()
    bad = load("bad_input")
    for rec in sorted(bad, key=lambda r: (r["row"], r["col"])):
        print(
            "| %s | %s | %s | %s |"
            % (
                rec["row"],
                rec["col"],
                SHORT.get(rec["outcome"], rec["outcome"]),
                rec["detail"].replace("|", "\\|").replace("\n", " ")[:160],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
