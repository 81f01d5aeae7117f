"""Benchmarks. Run each from the repository root as a module (`python -m bench.pretrain_step --quick`), or all of
them with `python -m bench.run_all`; every one writes its JSON with `bench.machine.write_result` and
`python -m bench.report` turns bench/results/*.json into BENCHMARKS.md."""
