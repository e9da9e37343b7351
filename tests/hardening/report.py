"""Render the measured matrices (written by the hardening tests to .tmp/hardening-results/) as Markdown.

Usage:
    .venv/bin/python tests/hardening/report.py           # print both tables
    .venv/bin/python tests/hardening/report.py --write   # and put them into docs/reliability.md

The fault table has one row per operation and one column per fault, in the matrix's order; a
cell the matrix does not run (``ops_for``) is "n/a", a cell with no record "not measured".
The combined-fault table (test_bulk_outcomes.py) has one row per fault seed and the totals: items
whose reported outcome differs from what Graph holds, duplicates and lost acknowledged writes.
The bad-input table starts with the tally (cases, tracebacks, partial writes, silent widenings).
With ``--write``, a matrix with no records this run keeps the table docs/reliability.md has.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_fault_matrix import FAULTS, OPS, ops_for

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / ".tmp" / "hardening-results"
DOC = ROOT / "docs" / "reliability.md"
SHORT = {
    "traceback": "❌ traceback",
    "partial write": "❌ partial write",
    "silent widening": "❌ silent widening",
    "not refused": "❌ not refused",
    "converged": "✅ converged",
    "clear error": "✅ clear error",
    "failed": "❌ failed",
    "fails before any write": "✅ fails before any write",
    "FALLS SHORT": "❌ falls short",
}


def load(name):
    path = RESULTS / ("%s.jsonl" % name)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _latest(records):
    """The last record of each (row, col): a re-run of one cell replaces its earlier outcome."""
    out = {}
    for rec in records:
        out[(rec["row"], rec["col"])] = rec
    return out


def fault_table(records):
    cells = _latest(records)
    lines = ["| operation \\ fault | " + " | ".join(FAULTS) + " |", "|---" * (len(FAULTS) + 1) + "|"]
    counts = {}
    for op in OPS:
        row = []
        for fault in FAULTS:
            if op not in ops_for(fault):
                text = "n/a"
            elif (op, fault) in cells:
                outcome = cells[(op, fault)]["outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
                text = SHORT.get(outcome, outcome)
            else:
                counts["not measured"] = counts.get("not measured", 0) + 1
                text = "not measured"
            row.append(text)
        lines.append("| %s | %s |" % (op, " | ".join(row)))
    summary = ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items()))
    failed = [rec for rec in cells.values() if rec["outcome"] == "failed"]
    lines.append("")
    lines.append("Cells: %s." % summary)
    for rec in sorted(failed, key=lambda r: (r["row"], r["col"])):
        lines.append("* `%s` × `%s` failed: %s" % (rec["row"], rec["col"], _cell_text(rec["detail"])))
    return "\n".join(lines)


def _cell_text(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def bad_input_tally(records):
    """Cases, tracebacks, partial writes and silent widenings, over the last record of each case."""
    outcomes = [rec["outcome"] for rec in _latest(records).values()]
    return {
        "cases": len(outcomes),
        "modules and roles": len({rec["row"] for rec in _latest(records).values()}),
        "fail before any write": outcomes.count("fails before any write"),
        "tracebacks": outcomes.count("traceback"),
        "partial writes": outcomes.count("partial write"),
        "silent widenings": outcomes.count("silent widening"),
        "accepted instead of refused": outcomes.count("not refused"),
        "messages that fall short": outcomes.count("FALLS SHORT"),
    }


def bad_input_table(records):
    tally = bad_input_tally(records)
    lines = [
        "Tally: " + ", ".join("%s %s" % (n, k) for k, n in tally.items()) + ".",
        "",
        "| module / role | case | outcome | writes | message (start) |",
        "|---|---|---|---|---|",
    ]
    for rec in sorted(_latest(records).values(), key=lambda r: (r["row"], r["col"])):
        lines.append(
            "| `%s` | %s | %s | %s | %s |"
            % (
                rec["row"].rsplit(".", 1)[-1],
                rec["col"],
                SHORT.get(rec["outcome"], rec["outcome"]),
                rec.get("writes", ""),
                _cell_text(rec["detail"])[:160],
            )
        )
    return "\n".join(lines)


COMBINED_KEYS = ("items", "mismatches", "duplicates", "lost_acknowledged", "failed_but_applied", "unknown")


def combined_table(records):
    """One row per seed (its last run) and a total row; the three tallies the fault suite reports."""
    runs = {}
    for rec in records:
        runs[rec["seed"]] = rec
    lines = [
        "| fault seed | items | outcome ≠ Graph | duplicates | lost acknowledged writes | failed but applied "
        "| unknown | statuses | faults injected |",
        "|---" * 9 + "|",
    ]
    totals = dict.fromkeys(COMBINED_KEYS, 0)
    for seed in sorted(runs):
        t = runs[seed]["tallies"]
        for key in COMBINED_KEYS:
            totals[key] += int(t.get(key) or 0)
        statuses = ", ".join("%s %d" % (k, n) for k, n in sorted((t.get("statuses") or {}).items()))
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                seed,
                *(t.get(key, "") for key in COMBINED_KEYS),
                statuses,
                t.get("faults_fired", ""),
            )
        )
    if runs:
        lines.append("| **all %d runs** | %s |  |  |" % (len(runs), " | ".join(str(totals[k]) for k in COMBINED_KEYS)))
    lines.append("")
    lines.append(
        "Runs: %d; %s items; %s outcomes differing from Graph, %s duplicates, %s lost acknowledged writes."
        % (len(runs), totals["items"], totals["mismatches"], totals["duplicates"], totals["lost_acknowledged"])
    )
    return "\n".join(lines)


def replace_block(text, marker, body):
    pattern = re.compile(r"(<!-- %s -->\n).*?(<!-- /%s -->)" % (marker, marker), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit("docs/reliability.md has no <!-- %s --> block" % marker)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main(argv):
    fault_records, combined_records, bad_records = load("faults"), load("combined"), load("bad_input")
    faults = fault_table(fault_records)
    combined = combined_table(combined_records)
    bad = bad_input_table(bad_records)
    print(faults)
    print()
    print(combined)
    print()
    print(bad)
    if "--write" in argv:
        text = DOC.read_text(encoding="utf-8")
        # A matrix that was not run this time (no records) keeps its last measured table.
        if fault_records:
            text = replace_block(text, "fault-table", faults)
        if combined_records:
            text = replace_block(text, "combined-faults", combined)
        if bad_records:
            text = replace_block(text, "bad-input-table", bad)
        DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
