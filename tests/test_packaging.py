"""Install extras: one FAISS build per extra (both provide the `faiss` module), CI runs the README's test line,
and the README's multi-process CPU line is the one tests/test_launch.py runs; the installed names (cmelt.data,
cmelt.train_scripts, cmelt.model_card, modeling_cmelt) and the import graph; shipped text and CLI style."""

import configparser
import re
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------------------------------------------------------
# the import graph (issue 12): train_scripts -> data -> modeling_cmelt, model_card below modeling_cmelt only, and
# no script imports another script

PROJECT_PACKAGES = ("modeling_cmelt", "data", "train_scripts", "model_card")
NAMESPACED = ("data", "train_scripts", "model_card")  # installed as cmelt.data, cmelt.train_scripts, cmelt.model_card


def module_name(path: Path) -> str:
    """The import name of a project file (data/x.py -> cmelt.data.x; modeling_cmelt keeps its own name)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("cmelt", *parts) if parts[0] in NAMESPACED else parts)


def package_of(name: str) -> str:
    """data / train_scripts / model_card / modeling_cmelt of an import name."""
    parts = name.split(".")
    return parts[1] if parts[0] == "cmelt" else parts[0]


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PROJECT_PACKAGES for path in (REPO / package).rglob("*.py")
            if "metrics" not in path.relative_to(REPO).parts}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere in it (function-level imports included; `from package import
    module` counts as importing that module; relative imports resolved)."""
    import ast

    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def entry_point_scripts(modules: dict[str, Path]) -> set[str]:
    """Modules under train_scripts/ that are commands: their `main` is a console script, or they run as __main__."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    registered = {line.split("=")[1].strip().split(":")[0]
                  for line in config["options.entry_points"]["console_scripts"].strip().splitlines()}
    return {name for name, path in modules.items() if name.startswith("cmelt.train_scripts.")
            and (name in registered or 'if __name__ == "__main__"' in path.read_text(encoding="utf-8"))}


def test_no_module_imports_a_training_script():
    modules = project_modules()
    scripts = entry_point_scripts(modules)
    assert {"cmelt.train_scripts.pretrain", "cmelt.train_scripts.demo", "cmelt.train_scripts.zero_shot"} <= scripts
    assert not scripts & {f"cmelt.train_scripts.{name}" for name in ("pretraining", "scoring", "datasets_registry")}
    offenders = {name: sorted(imported_modules(path, modules) & (scripts - {name})) for name, path in modules.items()}
    assert not {name: found for name, found in offenders.items() if found}


def test_imports_flow_one_way():
    modules = project_modules()
    allowed = {  # package -> the project packages it may import
        "modeling_cmelt": {"modeling_cmelt"},
        "model_card": {"model_card", "modeling_cmelt"},
        "data": {"data", "modeling_cmelt"},
        "train_scripts": {"train_scripts", "data", "modeling_cmelt", "model_card"},
    }
    upward = {}
    for name, path in modules.items():
        wrong = sorted(found for found in imported_modules(path, modules) if package_of(found) not in allowed[package_of(name)])
        if wrong:
            upward[name] = wrong
    assert not upward


def test_no_process_global_state():
    """No module-level caches (`global` rebinding), no writes to os.environ, no warnings filters or matplotlib
    backend switches at import time, in the project's own modules."""
    import ast

    found = []
    for name, path in project_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.append(f"{name}: global {', '.join(node.names)}")
            text = ast.unparse(node) if isinstance(node, (ast.Assign, ast.Call, ast.AugAssign)) else ""
            if text.startswith(("os.environ[", "os.environ.setdefault(", "os.environ.update(", "os.putenv(")):
                found.append(f"{name}: {text}")
        for statement in tree.body:  # import time: the module body itself
            text = ast.unparse(statement) if isinstance(statement, ast.Expr) else ""
            if text.startswith(("warnings.filterwarnings(", "warnings.simplefilter(", "matplotlib.use(")):
                found.append(f"{name}: {text}")
    assert not found


def test_one_cli_flag_style():
    """Every command's long flags are spelled with underscores (`--num_proc`), as HfArgumentParser spells the
    training scripts' flags."""
    import ast

    dashed = []
    for path in [*project_modules().values(), *(REPO / "bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                dashed += [f"{path.name}: {arg.value}" for arg in node.args if isinstance(arg, ast.Constant)
                           and isinstance(arg.value, str) and arg.value.startswith("--") and "-" in arg.value[2:]]
    assert not dashed
    readme = (REPO / "README.md").read_text()
    assert "--num-proc" not in readme and "--num_proc" in readme


def test_shipped_text_cites_no_file_outside_the_repository():
    """The README, the model card generator and the Hub folder are read by people who have only the repository
    (or only the Hub folder): no citation of the development notes or the shared data folder beside it."""
    shipped = [REPO / "README.md", *(REPO / "model_card").glob("*"), *(REPO / "modeling_cmelt").glob("*")]
    outside = ("REFERENCE.md", "ARCHITECTURE.md", "DATASET_LAYOUTS.md", "../shared")
    found = [f"{path.name}: {name}" for path in shipped if path.is_file() and path.suffix in (".py", ".md", ".json")
             for name in outside if name in path.read_text(encoding="utf-8")]
    assert not found


def test_imports_use_the_installed_names():
    """data/, train_scripts/ and model_card/ are imported as cmelt.data, cmelt.train_scripts, cmelt.model_card
    (their installed names) everywhere: a bare `import data` would find some other `data` module, or none."""
    import ast

    files = [*project_modules().values(), *(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py")]
    bare = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            bare += [f"{path.name}: {name}" for name in names if name.split(".")[0] in NAMESPACED]
    assert not bare


@pytest.mark.slow
def test_the_wheel_installs_no_bare_top_level_packages(tmp_path):
    """Installing the project puts cmelt/ (data, train_scripts, model_card) and modeling_cmelt/ into site-packages,
    never a bare data/, train_scripts/ or model_card/ that would collide with a user's own modules."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("cmelt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if "/" in name and ".dist-info/" not in name}
    assert top_level == {"cmelt", "modeling_cmelt"}
    for module in ("cmelt/data/ecg_store.py", "cmelt/train_scripts/pretrain.py", "cmelt/model_card/template.md",
                   "cmelt/train_scripts/metrics/macro_auroc/macro_auroc.py", "cmelt/data/merl_splits/ptbxl_super.csv.gz",
                   "modeling_cmelt/label_descriptions.json"):
        assert module in names
