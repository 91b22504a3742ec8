"""The package's layout: the model's concepts flat at the top, a few wings around them, small modules.

These rules are what a reader of ``ls mistral_nb`` relies on, so they are checked like the code."""

import ast
import importlib
import pkgutil
from pathlib import Path

import mistral_nb

PACKAGE = Path(mistral_nb.__file__).parent
MODEL = {"config", "norm", "rope", "attention", "masks", "cache", "model", "generate", "costs", "lora", "tokenizer"}
WINGS = {"checkpoint", "speed", "parallel", "training", "evals", "book", "viz"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules():
    return [m.name for m in pkgutil.walk_packages(mistral_nb.__path__, "mistral_nb.") if not m.name.endswith("__main__")]


def test_the_top_level_is_the_model_and_its_wings():
    top = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top - MODEL - WINGS == set(), "a module outside the model's concepts and the wings"
    assert WINGS <= top


def test_every_module_imports_and_exports_what_it_names():
    for name in _modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", [])
        assert [n for n in exported if not hasattr(module, n)] == [], name
        assert [n for n in exported if n.startswith("_")] == [], f"{name} exports private names"


def _top_level_imports(path: Path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            yield node.level, node.module or ""


def test_the_model_does_not_depend_on_its_wings():
    """The model's modules import each other only (and the one shared file guard, checkpoint.files)."""
    for path in list(PACKAGE.glob("*.py")) + list((PACKAGE / "tokenizer").glob("*.py")):
        if path == PACKAGE / "__init__.py":                       # the public API gathers from everywhere
            continue
        depth = 1 if path.parent == PACKAGE else 2
        for level, module in _top_level_imports(path):
            if level == depth:                                   # relative to mistral_nb itself
                head = module.split(".")[0]
                assert head not in WINGS or module == "checkpoint.files", f"{path.name} imports {module}"


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules.append((str(path.relative_to(PACKAGE)), lines))
        if path.parent.name == "viz":                            # plotting code is long by nature
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append((str(path.relative_to(PACKAGE)), node.name, n))
    assert long_modules == [] and long_functions == []


def test_python_m_mistral_nb_parallel_is_the_torchrun_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mistral_nb.parallel", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "torchrun --nproc-per-node N -m mistral_nb.parallel" in out.stdout, out.stderr
    assert "RuntimeWarning" not in out.stderr
