"""Colab rehearsal: every chapter runs as it does for a reader who opens it on Colab.

On Colab a chapter runs alone, from its own directory, in a Python that has Colab's packages,
`google.colab` imported, and nothing of this repository until the chapter's first cell installs
the package with `%pip install "mistral-nb @ git+https://github.com/<repository>@main"`. This test
builds that situation without the internet:

* **the repository**: the working tree (tracked and untracked files that git does not ignore, so
  work not yet committed is rehearsed too) copied into a temporary directory and committed there
  as branch `main` of a fresh git repository: "the clone";
* **GitHub's address**: git's `url.<clone>.insteadOf` (in the `GIT_CONFIG_COUNT` environment
  variables) rewrites `https://github.com/<repository>` to the clone, so the chapter's install
  cell runs verbatim, and pip clones, builds and installs the package from the clone as it would
  from GitHub (not editable; the test checks pip's `direct_url.json`);
* **raw.githubusercontent.com**: recorded results the package downloads (`mistral_nb.book.results`)
  come from a local HTTP server over the clone, named by `$MISTRAL_NB_RAW_BASE`, with an empty
  `$MISTRAL_NB_CACHE`; every request is logged and must succeed;
* **what Colab ships**, in a fresh `python -m venv`: torch (the CPU build, as on this machine),
  numpy, matplotlib, ipywidgets, ipykernel, nbclient, nbformat, transformers, safetensors,
  sentencepiece, tqdm, huggingface_hub, pyyaml, requests, each at the version of the environment
  that runs the tests (so pip takes them from its cache). Not installed: mistral_common and the
  package itself, which the install cell brings;
* **`google.colab`**: a stub package in the venv, imported at kernel start by an IPython startup
  file (as Colab's kernel does), so the install cell's `"google.colab" in sys.modules` branch runs;
* **each chapter alone**: the notebook copied by itself into an empty directory and executed
  there with nbclient in the venv's kernel (`OMP_NUM_THREADS=1`, `HF_HUB_OFFLINE=1`).

A chapter passes when no cell raises, its install cell installed the package from "GitHub",
no output says a recorded result is missing ("no recorded ... here", FileNotFoundError) where the
committed run (made in a clone) did not, and every cell shows at least as many figures as in the
committed run. Cells tagged `gpu` run too
(on a CPU they print why they do nothing), as they would on a CPU runtime.

The venv is built once per pytest session (about 1-2 minutes) and the chapters run two at a time
(`MISTRAL_NB_REHEARSAL_JOBS`, default: 2 or the number of CPUs if fewer); the executed notebooks are
written to `_build/colab-rehearsal/` (or `$MISTRAL_NB_REHEARSAL_OUT`). Marked `colab`: deselect
with `pytest -m "not colab"`.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest

import nbformat  # noqa: E402  (installed by requirements.txt: a missing one must fail, not skip)
import yaml  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# What a Colab runtime has before a chapter's install cell runs (pinned below to this
# environment's versions). nbclient and nbformat execute the notebook, as Colab's own machinery does.
COLAB_PACKAGES = ["torch", "numpy", "matplotlib", "ipywidgets", "ipykernel", "nbclient", "nbformat",
                  "transformers", "safetensors", "sentencepiece", "tqdm", "huggingface_hub",
                  "pyyaml", "requests"]

IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
MISSING_RESULT = re.compile(
    r"no (?:recorded|saved)\b[^\n]*\bhere|no recorded results|FileNotFoundError|"
    r"recorded (?:file|result) '[^']*' not found", re.I)

STUB = '''"""A stand-in for Colab's `google.colab` package (tests/test_colab_rehearsal.py).

Its presence in sys.modules is what the chapters' first cell checks before installing the package.
"""
REHEARSAL = True
'''

RUNNER = r'''
"""Execute one notebook in this Python's kernel, as Colab would; then ask the kernel where it
got the package from. Usage: python runner.py NOTEBOOK OUT.ipynb OUT.json"""
import json, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

src, out_nb, out_json = sys.argv[1:4]
nb = nbformat.read(src, as_version=4)
client = NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=False,
                        record_timing=False, store_widget_state=True,
                        resources={"metadata": {"path": "."}})
probe = nbformat.v4.new_code_cell(
    "import json as _j, os as _o, sys as _s\n"
    "import mistral_nb as _m\n"
    "print(_j.dumps({'executable': _s.executable, 'package': _m.__file__, 'cwd': _o.getcwd(),\n"
    "               'colab': 'google.colab' in _s.modules}))")
report = {"error": None}
t0 = time.perf_counter()
try:
    with client.setup_kernel():
        client.wait_for_reply(client.kc.kernel_info())
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        client.set_widgets_metadata()
        nb.cells.append(probe)                  # nbclient stores a cell's outputs at its index
        try:
            client.execute_cell(probe, len(nb.cells) - 1)
        finally:
            nb.cells.pop()
        text = "".join(o.get("text", "") for o in probe.outputs if o.get("output_type") == "stream")
        report["probe"] = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
except CellExecutionError as e:
    report["error"] = str(e)[-4000:]
except Exception as e:  # kernel died, timeout
    report["error"] = f"{type(e).__name__}: {e}"[-4000:]
report["seconds"] = round(time.perf_counter() - t0, 1)
nbformat.write(nb, out_nb)
with open(out_json, "w") as f:
    json.dump(report, f)
'''


def _pin(name: str) -> str:
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return name
    return f"{name}=={version.split('+')[0]}"   # torch 2.13.0+cpu: pip finds the local CPU build


def _copy_working_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():           # a tracked file deleted in the working tree is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=rehearsal", "-c", "user.email=rehearsal@localhost",
                    "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True, capture_output=True)


class _RawServer:
    """raw.githubusercontent.com for the clone: serves its files, logs every request."""

    def __init__(self, root: Path):
        self.requests: list[tuple[str, int]] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def log_request(self, code="-", size="-"):
                log.append((self.path, int(code) if str(code).isdigit() else 0))

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Rehearsal:
    def __init__(self, tmp: Path, out: Path):
        self.tmp, self.out = tmp, out
        self.results: dict[str, dict] = {}
        self.clone = tmp / "clone"
        self.venv = tmp / "venv"
        self.python = self.venv / "bin" / "python"
        self.timings: dict[str, float] = {}

    def setup(self):
        t0 = time.perf_counter()
        self.clone.mkdir()
        _copy_working_tree(self.clone)
        _git("init", "-q", "-b", BRANCH, cwd=self.clone)
        _git("add", "-A", cwd=self.clone)
        _git("commit", "-q", "-m", "working tree, for the Colab rehearsal", cwd=self.clone)
        self.commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self.clone, check=True,
                                     capture_output=True, text=True).stdout.strip()

        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        pins = [_pin(p) for p in COLAB_PACKAGES]
        proc = subprocess.run([str(self.python), "-m", "pip", "install", "-q", "--no-compile", *pins],
                              capture_output=True, text=True, env=self._env(install=True))
        assert proc.returncode == 0, f"installing Colab's packages {pins} failed:\n{proc.stderr[-3000:]}"
        site = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        stub = Path(site) / "google" / "colab"       # no google/__init__.py: a namespace package
        stub.mkdir(parents=True)
        (stub / "__init__.py").write_text(STUB)
        startup = self.tmp / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text("import google.colab  # as on Colab, imported at start\n")
        (self.tmp / "runner.py").write_text(RUNNER)
        self.server = _RawServer(self.clone)
        self.timings["setup"] = time.perf_counter() - t0

    def _env(self, install=False) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND", "PYTHONSTARTUP")
               and not k.startswith(("JUPYTER", "IPYTHON", "GIT_CONFIG", "MISTRAL_NB_"))}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        if install:
            return env
        jupyter = self.tmp / "jupyter"
        env.update({
            "VIRTUAL_ENV": str(self.venv),
            "IPYTHONDIR": str(self.tmp / "ipython"),
            "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_DATA_DIR": str(jupyter / "data"),
            "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
            # GitHub is the clone: the install cell runs unchanged
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.{self.clone.as_uri()}.insteadOf",
            "GIT_CONFIG_VALUE_0": REPO_URL,
            "GIT_TERMINAL_PROMPT": "0",
            "MISTRAL_NB_RAW_BASE": self.server.base,
            "MISTRAL_NB_CACHE": str(self.tmp / "cache"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        })
        return env

    def execute(self, name: str) -> dict:
        workdir = self.tmp / "runs" / name
        workdir.mkdir(parents=True)
        shutil.copy2(ROOT / "notebooks" / f"{name}.ipynb", workdir / f"{name}.ipynb")
        out_nb, out_json = self.out / f"{name}.ipynb", self.tmp / "runs" / f"{name}.json"
        t0 = time.perf_counter()
        proc = subprocess.run([str(self.python), str(self.tmp / "runner.py"), f"{name}.ipynb",
                               str(out_nb), str(out_json)],
                              cwd=workdir, env=self._env(), capture_output=True, text=True, timeout=1800)
        report = json.loads(out_json.read_text()) if out_json.is_file() else {
            "error": f"runner exited {proc.returncode}:\n{proc.stderr[-3000:]}"}
        report["wall"] = time.perf_counter() - t0
        report["notebook"] = nbformat.read(str(out_nb), as_version=4) if out_nb.is_file() else None
        report["source"] = nbformat.read(str(workdir / f"{name}.ipynb"), as_version=4)
        return report

    def run(self, names: list[str], jobs: int):
        todo = [n for n in names if n not in self.results]
        if not todo:
            return
        # the first chapter installs the package; the others then find it installed (a concurrent
        # first install of the same package into one venv could clash)
        self.results[todo[0]] = self.execute(todo[0])
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for name, report in zip(todo[1:], pool.map(self.execute, todo[1:])):
                self.results[name] = report

    def close(self):
        if getattr(self, "server", None):
            self.server.close()


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory, request):
    if shutil.which("git") is None:
        pytest.skip("the Colab rehearsal needs git (pip installs the package with git)")
    out = Path(os.environ.get("MISTRAL_NB_REHEARSAL_OUT") or ROOT / "_build" / "colab-rehearsal")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    r = Rehearsal(tmp_path_factory.mktemp("colab"), out)
    try:
        r.setup()
        # every chapter this session selected, run together (two at a time)
        r.selected = [item.callspec.params["name"] for item in request.session.items
                      if getattr(item, "originalname", "") == "test_chapter_runs_as_on_colab"
                      and hasattr(item, "callspec")]
        yield r
    finally:
        r.close()
        if r.results:
            lines = [f"{n}: {res['wall']:.0f} s" + (" (failed)" if res.get("error") else "")
                     for n, res in r.results.items()]
            total = sum(res["wall"] for res in r.results.values())
            print(f"\nColab rehearsal: setup (clone + venv) {r.timings.get('setup', 0):.0f} s; "
                  f"chapters {total:.0f} s of kernel time: " + ", ".join(lines))


def _jobs() -> int:
    return int(os.environ.get("MISTRAL_NB_REHEARSAL_JOBS") or min(2, os.cpu_count() or 1))


def _tags(cell) -> list:
    t = cell.get("metadata", {}).get("tags", [])
    return list(t) if isinstance(t, list) else []


def _text(out) -> str:
    parts = [out.get("text", "")] if isinstance(out.get("text"), str) else ["".join(out.get("text", []))]
    for mime, value in out.get("data", {}).items():
        if not mime.startswith("image/"):
            parts.append(value if isinstance(value, str) else json.dumps(value))
    parts += out.get("traceback", [])
    if out.get("output_type") == "error":
        parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def _markers(text: str) -> set:
    return {m.group(0) for m in MISSING_RESULT.finditer(text)}


def _n_images(cell) -> int:
    return sum(1 for o in cell.get("outputs", []) if any(m in o.get("data", {}) for m in IMAGE_MIMES))


def chapter_problems(executed, committed) -> list[str]:
    """What a reader on Colab would miss in ``executed`` compared with the ``committed`` run: an
    error, a "no recorded ... here" / FileNotFoundError the committed run (in a clone) did not
    print, fewer figures in a cell."""
    problems = []
    if len(executed.cells) != len(committed.cells):
        return [f"{len(executed.cells)} cells executed, the notebook has {len(committed.cells)}"]
    for i, (cell, ref) in enumerate(zip(executed.cells, committed.cells)):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and "raises-exception" not in _tags(cell):
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
        # only markers the committed run did not print: a cell may show source that names
        # FileNotFoundError, or demonstrate the error on purpose
        text = "\n".join(_text(o) for o in cell.get("outputs", []))
        new_markers = _markers(text) - _markers("\n".join(_text(o) for o in ref.get("outputs", [])))
        if new_markers:
            problems.append(f"cell {i} shows no recorded result: {sorted(new_markers)} in "
                            f"{text.strip()[:300]!r}")
        if _n_images(cell) < _n_images(ref):
            problems.append(f"cell {i} shows {_n_images(cell)} figures, the committed run {_n_images(ref)}")
    return problems


@pytest.mark.colab
@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_chapter_runs_as_on_colab(rehearsal, name):
    rehearsal.run([name] + [n for n in rehearsal.selected if n != name], _jobs())
    report = rehearsal.results[name]
    where = f"(executed notebook: {rehearsal.out / (name + '.ipynb')})"
    nb = report["notebook"]
    assert report.get("error") is None and nb is not None, (
        f"{name} failed on the rehearsed Colab {where}:\n{report.get('error')}")

    # the install cell installed the package from "GitHub" (the clone), not editable
    probe = report.get("probe") or {}
    assert probe.get("colab") is True, f"{name}: google.colab was not imported: {probe}"
    assert probe.get("package", "").startswith(str(rehearsal.venv)), (
        f"{name}: mistral_nb was imported from {probe.get('package')}, not from the venv's site-packages")
    dist = next(Path(probe["package"]).parents[1].glob("mistral_nb-*.dist-info"), None)
    direct = json.loads((dist / "direct_url.json").read_text()) if dist else {}
    assert direct.get("url") == REPO_URL and direct.get("vcs_info", {}).get("commit_id") == rehearsal.commit, (
        f"{name}: the package was not installed by the install cell from {REPO_URL}@{BRANCH}: {direct}")
    assert not direct.get("dir_info", {}).get("editable"), f"{name}: an editable install"

    # every result on the page, compared with the notebook as it was when the rehearsal copied it
    problems = chapter_problems(nb, report["source"])
    assert not problems, f"{name} on the rehearsed Colab {where}:\n" + "\n".join(problems)


@pytest.mark.colab
def test_recorded_results_came_from_the_repository(rehearsal):
    """Every request to the stand-in for raw.githubusercontent.com succeeded, and the chapters
    that plot recorded results (09 at least) fetched them through ``$MISTRAL_NB_RAW_BASE``."""
    rehearsal.run(rehearsal.selected, _jobs())
    if not rehearsal.results:
        pytest.skip("no chapter was rehearsed")
    failed = [f"{path} -> HTTP {code}" for path, code in rehearsal.server.requests if code != 200]
    assert not failed, "requests for repository files that the clone does not have:\n" + "\n".join(failed)
    served = sorted({path for path, code in rehearsal.server.requests})
    if "09_performance" in rehearsal.results:
        assert any(p.startswith("/benchmarks/results/") for p in served), (
            f"chapter 09 read no recorded benchmark through $MISTRAL_NB_RAW_BASE: {served}")


# ---------------------------------------------------------------------------------------------
# the comparison itself, on made-up notebooks (fast, not marked colab)


def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    return nb


PNG = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
       "metadata": {}}


def _stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_chapter_problems_sees_a_fallback_to_no_recorded_results():
    committed = _nb(("sweep = load()", [_stream("command: python experiments/receptive_field.py\n")]),
                    ("plot(sweep)", [PNG]))
    fallback = _nb(("sweep = load()", [_stream("no recorded sweep here: run `python experiments/"
                                               "receptive_field.py` in a clone of the repository\n")]),
                   ("plot(sweep)", []))
    problems = chapter_problems(fallback, committed)
    assert any("cell 0 shows no recorded result" in p for p in problems), problems
    assert any("cell 1 shows 0 figures, the committed run 1" in p for p in problems), problems
    assert chapter_problems(committed, committed) == []


def test_chapter_problems_sees_errors_but_not_source_that_names_them():
    source = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/markdown": "```python\nexcept FileNotFoundError:\n    pass\n```"}}
    committed = _nb(("show_source(load)", [source]), ("x = 1", []))
    error = {"output_type": "error", "ename": "FileNotFoundError",
             "evalue": "recorded file 'benchmarks/results/x.json' not found", "traceback": []}
    broken = _nb(("show_source(load)", [source]), ("x = 1", [error]))
    assert chapter_problems(committed, committed) == []
    problems = chapter_problems(broken, committed)
    assert any(p.startswith("cell 1: FileNotFoundError") for p in problems), problems
