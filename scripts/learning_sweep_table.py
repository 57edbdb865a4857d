"""The learning sweep's table: per learning test, each measured value (rows) under each setting (columns),
with the worst and best over all of them, from the JSON Lines that scripts/learning_sweep.sh collects.

    python scripts/learning_sweep_table.py sweep/results.jsonl [--markdown]
"""
from __future__ import annotations

import argparse
import collections
import json


def tables(lines: list[dict]) -> dict[str, tuple[list[str], dict[str, dict[str, object]]]]:
    """test -> (settings in order, {value name: {setting: value}}), with a "passed" row."""
    by_test: dict[str, tuple[list[str], dict]] = {}
    for line in lines:
        test, setting = line["sweep"].split(" ", 1)
        settings, rows = by_test.setdefault(test, ([], collections.defaultdict(dict)))
        settings.append(setting)
        rows["passed"][setting] = "yes" if line["passed"] else "NO"
        for key, value in line["values"].items():
            rows[key][setting] = value
    return by_test


def render(test: str, settings: list[str], rows: dict, markdown: bool) -> str:
    header = ["value", *settings, "min", "max"]
    body = []
    for key, values in rows.items():
        numbers = [v for v in values.values() if isinstance(v, (int, float))]
        cells = [values.get(s, "") for s in settings]
        spread = [min(numbers), max(numbers)] if numbers and key != "passed" else ["", ""]
        body.append([key, *cells, *spread])
    text = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in [header, *body]]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in text]
        return f"### {test}\n\n" + "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]])
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    return f"== {test}\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables, for the docs")
    args = parser.parse_args()
    with open(args.results) as results:
        lines = [json.loads(line) for line in results if line.strip()]
    for test, (settings, rows) in tables(lines).items():
        print(render(test, settings, rows, args.markdown) + "\n")


if __name__ == "__main__":
    main()
