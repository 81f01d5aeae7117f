"""Generate BENCHMARKS.md from every bench/results/*.json.

    python -m bench.report [--results bench/results] [--output BENCHMARKS.md]

Expected JSON shape of one benchmark (every key optional; anything missing is shown as "—")::

    {
      "name": "pretrain_step",                       # default: the file name without .json
      "command": "python -m bench.pretrain_step --quick",   # how to reproduce (str or list of args);
                                                     # default: `python -m bench.<name>` if that script exists
      "goal": {"metric": "mfu_fp32", "op": ">=", "value": 0.6},
                                                     # op: ">=", "<=", ">", "<" or "=="; with row results, add
                                                     # "row": {column: value} to pick the row the goal is about.
                                                     # A plain string goal is shown as is (no verdict).
      "results": {"mfu_fp32": 0.21, ...},            # {metric: value} ...
      "rows": [{"input": "...", "throughput": 678.0}, ...],   # ... or a list of rows (also accepted as
                                                     # "results": [...]); both may be present
      "machine": {...},                              # bench/machine.py `machine_info()`
      "status": "failed", "returncode": 1, "error": "...",    # written by bench/run_all.py on failure,
      "previous": {...}                              # with the last successful JSON (if any) kept here
    }

Top-level keys outside this schema (older scripts' "cpu_count", "repetitions", ...) are listed under "other fields".
A file that is not valid JSON or not an object is reported as unreadable; the page is still written.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO / "bench" / "results"
DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
MISSING = "—"
SCHEMA_KEYS = {"name", "command", "goal", "results", "rows", "machine", "status", "returncode", "error", "previous"}
GOAL_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
# Fields of a "machine" block in display order (bench/machine.py); any other field is appended.
MACHINE_FIELDS = (
    ("cpu_model", "CPU"),
    ("usable_cores", "usable cores"),
    ("cpu_count", "logical CPUs"),
    ("ram_gib", "RAM (GiB)"),
    ("torch_threads", "torch threads"),
    ("cuda", "GPU"),
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("datasets", "datasets"),
    ("python", "Python"),
    ("os", "OS"),
    ("git_commit", "git commit"),
    ("date", "date (UTC)"),
)


def format_value(value) -> str:
    """A cell: floats with 4 significant digits (one decimal from 100 up), None / NaN as "—", pipes escaped."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        if abs(value) >= 1e9:
            return f"{value:.4e}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    return str(value).replace("|", "\\|").replace("\n", " ")


def heading_anchor(heading: str) -> str:
    """The anchor GitHub / the Hub give a markdown heading: lower case, punctuation dropped, spaces to dashes."""
    kept = "".join(char for char in heading.lower() if char.isalnum() or char in " -_")
    return kept.replace(" ", "-")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_benchmark(path: Path) -> dict:
    """The JSON of one benchmark, or {"name": stem, "unreadable": reason} when it cannot be used."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return {"name": path.stem, "unreadable": f"{type(error).__name__}: {error}"}
    if not isinstance(document, dict):
        return {"name": path.stem, "unreadable": f"expected a JSON object, got {type(document).__name__}"}
    document.setdefault("name", path.stem)
    return document


def metric_values(benchmark: dict) -> dict:
    results = benchmark.get("results")
    return results if isinstance(results, dict) else {}


def result_rows(benchmark: dict) -> list[dict]:
    rows = []
    for key in ("results", "rows"):
        value = benchmark.get(key)
        if isinstance(value, list):
            rows.extend(row for row in value if isinstance(row, dict))
    return rows


def command_of(benchmark: dict) -> tuple[str | None, bool]:
    """(command, inferred): the recorded command, else `python -m bench.<name>` when that script exists."""
    command = benchmark.get("command")
    if isinstance(command, list):
        command = " ".join(str(part) for part in command)
    if isinstance(command, str) and command.strip():
        return command.strip(), False
    script = REPO / "bench" / f"{benchmark.get('name')}.py"
    if script.is_file():
        return f"python -m bench.{script.stem}", True
    return None, False


def goal_text(goal) -> str:
    if isinstance(goal, dict):
        text = f"{goal.get('metric', MISSING)} {goal.get('op', '?')} {format_value(goal.get('value'))}"
        if isinstance(goal.get("row"), dict):
            text += " for " + ", ".join(f"{key} = {value}" for key, value in goal["row"].items())
        return text
    if isinstance(goal, str) and goal.strip():
        return goal.strip()
    return MISSING


def evaluate_goal(benchmark: dict) -> tuple[str, object]:
    """(verdict, measured value): verdict is "met", "not met", "failed", or a reason it could not be judged."""
    if benchmark.get("status") == "failed":
        return "failed", None
    goal = benchmark.get("goal")
    if goal is None:
        return "no goal recorded", None
    if not isinstance(goal, dict):
        return "not judged (goal is free text)", None
    metric, op, target = goal.get("metric"), goal.get("op"), goal.get("value")
    if op not in GOAL_OPERATORS or not isinstance(target, (int, float)) or not metric:
        return "not judged (goal needs metric, op in >= <= > < ==, numeric value)", None
    if isinstance(goal.get("row"), dict):
        selector = goal["row"]
        matches = [row for row in result_rows(benchmark) if all(row.get(k) == v for k, v in selector.items())]
        measured = matches[0].get(metric) if matches else None
    else:
        measured = metric_values(benchmark).get(metric)
    if not isinstance(measured, (int, float)) or isinstance(measured, bool) or not math.isfinite(measured):
        return f"not judged ({metric} not measured)", measured
    return ("met" if GOAL_OPERATORS[op](measured, target) else "not met"), measured


def machine_summary(machine) -> str:
    if not isinstance(machine, dict) or not machine:
        return "not recorded"
    parts = [machine.get("cpu_model")]
    cores = machine.get("usable_cores") or machine.get("cpu_count")
    parts.append(f"{cores} cores" if cores else None)
    parts.append(f"{machine['ram_gib']} GiB RAM" if machine.get("ram_gib") else None)
    parts.append(f"torch {machine['torch']}" if machine.get("torch") else None)
    parts.append(f"transformers {machine['transformers']}" if machine.get("transformers") else None)
    parts.append(str(machine["date"])[:10] if machine.get("date") else None)
    return ", ".join(part for part in parts if part) or "not recorded"


def _figures_section(benchmark: dict) -> list[str]:
    lines = []
    metrics = metric_values(benchmark)
    if metrics:
        lines += ["", markdown_table(["metric", "value"], [[key, value] for key, value in metrics.items()])]
    rows = result_rows(benchmark)
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["", markdown_table(columns, [[row.get(column) for column in columns] for row in rows])]
    if not lines:
        lines = ["", "No figures recorded."]
    return lines


def _machine_section(machine) -> list[str]:
    if not isinstance(machine, dict) or not machine:
        return ["", "No `machine` block in this result (the script does not call `bench/machine.py`'s "
                    "`machine_info()` yet): the hardware it ran on is unknown."]
    known = [key for key, _ in MACHINE_FIELDS]
    rows = [[label, machine.get(key)] for key, label in MACHINE_FIELDS if key in machine]
    rows += [[key, value] for key, value in machine.items() if key not in known]
    return ["", markdown_table(["field", "value"], rows)]


def benchmark_section(benchmark: dict) -> list[str]:
    name = benchmark.get("name", MISSING)
    lines = [f"## {name}", ""]
    if "unreadable" in benchmark:
        return lines + [f"Result file could not be read: {benchmark['unreadable']}", ""]
    verdict, measured = evaluate_goal(benchmark)
    command, inferred = command_of(benchmark)
    if benchmark.get("goal") is None and verdict != "failed":
        goal_line = f"**Goal:** {MISSING} (none recorded)"
    else:
        goal_line = f"**Goal:** {goal_text(benchmark.get('goal'))} — **{verdict}**"
    if measured is not None and verdict in ("met", "not met"):
        goal_line += f" (measured {format_value(measured)})"
    lines.append(goal_line)
    lines.append("")
    reproduce = f"`{command}`" if command else MISSING
    inferred_note = " (inferred: the result file records no command)" if inferred else ""
    lines.append(f"**Reproduce:** {reproduce}{inferred_note}")
    lines.append("")
    lines.append(f"**Machine:** {machine_summary(benchmark.get('machine'))}")
    if benchmark.get("status") == "failed":
        lines += ["", f"**This benchmark failed** (exit code {format_value(benchmark.get('returncode'))}).", ""]
        error = str(benchmark.get("error") or "").strip()
        if error:
            lines += ["```text", error, "```"]
        previous = benchmark.get("previous")
        if isinstance(previous, dict):
            date = (previous.get("machine") or {}).get("date") if isinstance(previous.get("machine"), dict) else None
            lines += ["", f"Last recorded figures before the failure (run of {format_value(date)}):"]
            lines += _figures_section(previous)
    else:
        lines += ["", "### Figures"] + _figures_section(benchmark)
    lines += ["", "### Machine"] + _machine_section(benchmark.get("machine"))
    others = {key: value for key, value in benchmark.items() if key not in SCHEMA_KEYS}
    if others:
        lines += ["", "### Other fields", "", markdown_table(["field", "value"], [[k, v] for k, v in others.items()])]
    return lines + [""]


def render_report(benchmarks: list[dict], source: str = "bench/results") -> str:
    """The whole BENCHMARKS.md page for the given benchmark documents (see the module docstring)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench.report` from {len(benchmarks)} result file(s) in `{source}` on {now}. "
        "Re-run every benchmark and regenerate this page with `python -m bench.run_all` (quick settings; "
        "`--full` for the scripts' defaults). Figures are from the machine named in each section; other machines "
        "differ.",
        "",
    ]
    if not benchmarks:
        return "\n".join(lines + ["No benchmark results found.", ""])
    summary = []
    for benchmark in benchmarks:
        if "unreadable" in benchmark:
            summary.append([benchmark["name"], MISSING, MISSING, "unreadable", MISSING])
            continue
        verdict, measured = evaluate_goal(benchmark)
        summary.append([
            f"[{benchmark['name']}](#{heading_anchor(str(benchmark['name']))})",
            goal_text(benchmark.get("goal")),
            measured,
            verdict,
            machine_summary(benchmark.get("machine")),
        ])
    lines += [markdown_table(["benchmark", "goal", "measured", "verdict", "machine"], summary), ""]
    for benchmark in benchmarks:
        lines += benchmark_section(benchmark)
    return "\n".join(lines)


def write_report(results_dir=DEFAULT_RESULTS, output=DEFAULT_OUTPUT) -> Path:
    """Read every `*.json` directly in `results_dir` (sorted by name) and write the page to `output`."""
    results_dir, output = Path(results_dir), Path(output)
    files = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    benchmarks = [load_benchmark(path) for path in files]
    try:
        source = results_dir.resolve().relative_to(REPO)
    except ValueError:
        source = results_dir
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(benchmarks, str(source)), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="folder of benchmark JSON files")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="markdown page to write")
    args = parser.parse_args(argv)
    output = write_report(args.results, args.output)
    print(f"wrote {output}")
    return output


if __name__ == "__main__":
    main()
