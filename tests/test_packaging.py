"""Install extras: one FAISS build per extra (both provide the `faiss` module), CI runs the README's test line,
and the README's multi-process CPU line is the one tests/test_launch.py runs."""

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def requirement_names(block: str) -> list[str]:
    return [re.split(r"[<>=!~\[ ]", line.strip())[0] for line in block.strip().splitlines() if line.strip()]


def test_each_extra_installs_at_most_one_faiss_build():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    base = requirement_names(config["options"]["install_requires"])
    assert not [name for name in base if name.startswith("faiss")]
    extras = {name: requirement_names(block) for name, block in config["options.extras_require"].items()}
    assert [n for n in extras["cpu"] if n.startswith("faiss")] == ["faiss-cpu"]
    assert [n for n in extras["gpu"] if n.startswith("faiss")] == ["faiss-gpu-cu12"]
    assert [n for n in extras["test"] if n.startswith("faiss")] == ["faiss-cpu"]


def test_ci_runs_a_readme_command_verbatim():
    readme = (REPO / "README.md").read_text()
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in readme
    assert 'pip install -e ".[cpu]" && python train_scripts/demo.py' in readme  # the demo line installs FAISS


def test_readme_cpu_launch_line_is_the_tested_one():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_launch import CPU_2PROC

    readme = (REPO / "README.md").read_text()
    relative = [arg.replace(str(REPO) + "/", "") for arg in CPU_2PROC]
    line = "accelerate launch " + " ".join(relative) + " train_scripts/pretrain.py --use_cpu true"
    assert line in readme
