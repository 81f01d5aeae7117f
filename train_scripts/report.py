"""`cmelt-report RESULTS...`: one Markdown table of evaluation results, beside the paper's published numbers.

    cmelt-report runs/zero_shot runs/linear_probe/results.json [--output table.md]

RESULTS are "cmelt-results/1" files or folders (every `results*.json` below them), as every evaluation script
writes. Each row shows the value with its bootstrap 95 % interval, the random-init baseline and the paired
difference when measured, and the C-MELT paper's number for the same task, protocol, label fraction, leads and
metric (`paper_results.json`, marked "paper, published"; C-MELT Tab. 1, 2, 3, 5). Values are shown x 100.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from cmelt.train_scripts.evaluation import format_value, read_rows

PAPER_RESULTS_FILE = Path(__file__).resolve().parent / "paper_results.json"
PAPER_KEY = ("task", "protocol", "label_fraction", "leads", "metric")
COLUMNS = (
    "task", "protocol", "labels", "leads", "split", "prompts", "metric", "n test", "model", "value [95 % CI]",
    "random-init [95 % CI]", "difference [95 % CI]", "paper, published",
)


def paper_results(path: str | Path = PAPER_RESULTS_FILE) -> dict[tuple, float]:
    """(task, protocol, label_fraction, leads, metric) -> the paper's published value, in percent."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return {tuple(entry[key] for key in PAPER_KEY): float(entry["value"]) for entry in document["results"]}


def _paper_value(row: Mapping, published: Mapping[tuple, float]) -> str:
    value = published.get(tuple(row[key] for key in PAPER_KEY))
    return "—" if value is None else f"{value:g}"


def markdown_table(rows: Sequence[Mapping], published: Mapping[tuple, float] | None = None) -> str:
    """The Markdown table of `rows` (schema rows), sorted by task, protocol, label fraction and leads."""
    published = paper_results() if published is None else published
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 9 + "---:|" * 4]
    order = sorted(rows, key=lambda r: (r["task"], r["protocol"], -r["label_fraction"], r["leads"], r["model"]))
    for row in order:
        baseline, delta = row["baseline"], row["delta_vs_baseline"]
        cells = [
            row["task"], row["protocol"], f"{row['label_fraction'] * 100:g} %", row["leads"], row["split_source"],
            row["prompt_set"] or "—", row["metric"], str(row["n_test"]), row["model"],
            format_value(row["value"], row["ci95"]),
            "—" if baseline is None else format_value(baseline["value"], baseline["ci95"]),
            "—" if delta is None else format_value(delta["value"], delta["ci95"]),
            _paper_value(row, published),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files or folders holding them")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    rows = read_rows(args.results)
    if not rows:
        raise ValueError(f"no result rows in {args.results}")
    table = markdown_table(rows)
    text = (
        f"{table}\n\nValues x 100. Intervals: bootstrap 95 % (percentile, seeded resamples of the test set); the "
        "difference is paired (same resamples). \"paper, published\": C-MELT's own numbers (Tab. 1-3, 5), not "
        "measured here.\n"
    )
    print(text, end="")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
