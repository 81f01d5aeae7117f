"""BENCHMARKS.md generation (bench/report.py), failure records and flag detection (bench/run_all.py), machine info."""

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

from bench import machine, report, run_all

MACHINE = {"cpu_model": "Test CPU 9000", "usable_cores": 2, "cpu_count": 2, "ram_gib": 7.7, "torch": "2.13.0",
           "transformers": "5.23.0", "date": "2025-01-02T03:04:05+00:00"}
MET = {
    "name": "fast_thing",
    "command": "python bench/fast_thing.py --quick",
    "goal": {"metric": "records_per_second", "op": ">=", "value": 500},
    "results": {"records_per_second": 678.25, "workers": 2},
    "machine": MACHINE,
}
NOT_MET = {
    "name": "slow_thing",
    "command": ["python", "bench/slow_thing.py", "--steps", "3"],
    "goal": {"metric": "seconds", "op": "<=", "value": 1.5, "row": {"case": "large"}},
    "rows": [{"case": "small", "seconds": 0.25}, {"case": "large", "seconds": 3.125}],
}


def write(folder: Path, name: str, document) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / f"{name}.json").write_text(text)


def section(page: str, name: str) -> str:
    return page.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]


def test_report_shows_figures_verdicts_commands_and_machines(tmp_path):
    write(tmp_path / "results", "fast_thing", MET)
    write(tmp_path / "results", "slow_thing", NOT_MET)
    page = report.write_report(tmp_path / "results", tmp_path / "BENCHMARKS.md").read_text()

    fast, slow = section(page, "fast_thing"), section(page, "slow_thing")
    assert "**met** (measured 678.2)" in fast or "**met** (measured 678.3)" in fast
    assert "`python bench/fast_thing.py --quick`" in fast
    assert "| records_per_second | 678." in fast and "| workers | 2 |" in fast
    assert "Test CPU 9000, 2 cores, 7.7 GiB RAM, torch 2.13.0, transformers 5.23.0, 2025-01-02" in fast

    assert "seconds <= 1.5 for case = large — **not met** (measured 3.125)" in slow
    assert "`python bench/slow_thing.py --steps 3`" in slow
    assert "| small | 0.25 |" in slow and "| large | 3.125 |" in slow
    assert "No `machine` block" in slow

    summary = page.split("## fast_thing", 1)[0]
    assert "[fast_thing](#fast_thing)" in summary and "[slow_thing](#slow_thing)" in summary
    assert summary.count("| met |") == 1 and summary.count("| not met |") == 1


def test_report_tolerates_missing_keys_free_text_goals_and_broken_files(tmp_path):
    results = tmp_path / "results"
    write(results, "bare", {})
    write(results, "legacy", {"goal": ">= 500 records/s", "cpu_count": 2, "rows": [{"input": "a", "throughput": 1.0}]})
    write(results, "broken", "{not json")
    write(results, "a_list", [1, 2])
    write(results, "nan_value", {"goal": {"metric": "x", "op": ">=", "value": 1}, "results": {"x": None}})
    page = report.render_report([report.load_benchmark(path) for path in sorted(results.glob("*.json"))])
    assert "**Goal:** — (none recorded)" in section(page, "bare")
    assert "No figures recorded." in section(page, "bare")
    legacy = section(page, "legacy")
    assert "not judged (goal is free text)" in legacy and "| cpu_count | 2 |" in legacy and "| a | 1 |" in legacy
    assert "could not be read" in section(page, "broken") and "could not be read" in section(page, "a_list")
    assert "not judged (x not measured)" in section(page, "nan_value")


def test_failure_record_keeps_the_last_successful_figures(tmp_path):
    results = tmp_path / "results"
    write(results, "fast_thing", MET)
    command = [sys.executable, "bench/fast_thing.py", "--quick"]
    run_all.record_failure(results, "fast_thing", command, 1, "Traceback\nBoom")
    run_all.record_failure(results, "fast_thing", command, 2, "again")
    record = json.loads((results / "fast_thing.json").read_text())
    assert record["status"] == "failed" and record["returncode"] == 2
    assert record["previous"]["results"] == MET["results"]  # not the first failure record
    page = report.render_report([report.load_benchmark(results / "fast_thing.json")])
    fast = section(page, "fast_thing")
    assert "**failed**" in fast and "exit code 2" in fast and "again" in fast
    assert "`python bench/fast_thing.py --quick`" in fast and "| records_per_second | 678." in fast


def test_run_all_detects_quick_flag_and_reports_exit_codes(tmp_path):
    with_quick = tmp_path / "with_quick.py"
    with_quick.write_text(
        "import argparse, sys\nparser = argparse.ArgumentParser()\n"
        "parser.add_argument('--quick', action='store_true')\n"
        "args = parser.parse_args()\nprint('quick' if args.quick else 'full')\nsys.exit(3)\n"
    )
    without = tmp_path / "without.py"
    without.write_text("import argparse\nargparse.ArgumentParser().parse_args()\n")
    assert run_all.supports_quick(with_quick) and not run_all.supports_quick(without)
    returncode, tail = run_all.run_script([sys.executable, str(with_quick), "--quick"], timeout=60)
    assert returncode == 3 and tail.splitlines()[-1] == "quick"
    names = [path.stem for path in run_all.benchmark_scripts()]
    assert "run_all" not in names and "report" not in names and "machine" not in names
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_all.benchmark_scripts(["no_such_benchmark"])


def test_machine_info_fields():
    info = machine.machine_info()
    assert info["cpu_count"] >= 1 and 1 <= info["usable_cores"] <= info["cpu_count"]
    assert info["torch"] and info["transformers"]
    assert datetime.fromisoformat(info["date"]).tzinfo is not None
    json.dumps(info)  # must be storable in the bench JSON


def test_bench_is_a_package_with_one_result_writer():
    """Benchmarks run as `python -m bench.<name>`: no sys.path edits; every result JSON goes through
    `bench.machine.write_result` (report.py writes only the markdown page)."""
    bench = Path(report.__file__).resolve().parent
    assert (bench / "__init__.py").is_file()
    for path in sorted(bench.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, path.name
        if path.name not in ("machine.py", "report.py"):
            assert "json.dump(" not in text and ".write_text(" not in text, path.name
