#!/usr/bin/env python
"""Vendor the JavaScript the book loads, so that the built book works with no network.

    python scripts/vendor_js.py            # fetch the pinned versions with npm, refresh book/_static
    python scripts/vendor_js.py --check    # only verify book/_static against book/_static/vendor.json

Two npm packages are copied into the book's static files (`book/_static/`, which `_config.yml`
lists in `html_static_path`), each pinned to one version and checked against the registry's
integrity hash, with its licence beside it:

* **MathJax 3** (`mathjax`, Apache-2.0), the major version Sphinx 7's `sphinx.ext.mathjax` is
  written for. Only `es5/tex-chtml-full.js` (TeX input with every TeX extension built in, so
  nothing is loaded on demand, and CommonHTML output) and the CommonHTML woff2 fonts it loads
  are kept: about 1.7 MB of the package's 24 MB.
* **The Jupyter widgets HTML manager** (`@jupyter-widgets/html-manager`, BSD-3-Clause), the
  bundle `dist/embed.js` that renders saved widget state (ipywidgets 8: `@jupyter-widgets/base`
  2.0, `controls` 2.0, `output` 1.0) when the page loads. It needs no require.js: the book's
  widgets are all built-in ones. (`embed-amd.js`, myst-nb's default, is twice the size and only
  adds loading third-party widget modules from a CDN with require.js, which an offline book
  cannot do anyway.) The package's tarball has no LICENSE file, so the licence is taken from
  `@jupyter-widgets/schema` of the same monorepo (jupyter-widgets/ipywidgets), which carries the
  same BSD-3-Clause text; `embed.js.LICENSE.txt` lists the bundled third-party code. The CSS in
  embed.js loads Font Awesome 5 fonts from beside the script (it styles the theme's `fa` icons
  too, so they are needed on widget pages): the three woff2 files are kept, with Font Awesome
  Free's licence (fonts: SIL OFL 1.1) from `@fortawesome/fontawesome-free`.

To update: change a version below, set its `integrity` to what `npm view PACKAGE@VERSION
dist.integrity` prints, run this script, build the book and run the browser check
(`pytest tests/test_book.py`), which fails on any formula MathJax cannot typeset, any widget
that does not render and any request that leaves the machine. If a new MathJax needs other
files (a 404 in the browser check names them), add them to `files`. `book/_static/vendor.json`
records what was copied (version, integrity, sha256 of every file); `tests/test_book.py`
checks the files against it and `_config.yml` against the files.

Needs npm (Node.js); it talks only to the npm registry (`npm pack`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "book" / "_static"
MANIFEST = STATIC / "vendor.json"


@dataclass(frozen=True)
class Package:
    name: str                  # npm package name
    version: str               # pinned version
    integrity: str             # the registry's dist.integrity (sha512) of that version's tarball
    licence: str               # SPDX id
    dest: str                  # directory under book/_static
    files: dict[str, str]      # path in the tarball (under package/) -> path under dest; a trailing
    #                            "/" copies a directory's files (not recursive), "dir/*.ext" the
    #                            files that match into the directory dest path
    # files taken from another npm package: (package, version, integrity, file, path under dest)
    extra: tuple[tuple[str, str, str, str, str], ...] = ()
    notes: list[str] = field(default_factory=list)


PACKAGES = [
    Package(
        name="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        licence="Apache-2.0",
        dest="mathjax",
        files={
            "es5/tex-chtml-full.js": "tex-chtml-full.js",
            "es5/output/chtml/fonts/woff-v2/": "output/chtml/fonts/woff-v2/",
            "LICENSE": "LICENSE",
        },
    ),
    Package(
        name="@jupyter-widgets/html-manager",
        version="1.0.15",
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        licence="BSD-3-Clause",
        dest="jupyter-widgets",
        files={
            "dist/embed.js": "embed.js",
            "dist/embed.js.LICENSE.txt": "embed.js.LICENSE.txt",
            "dist/*.woff2": "",            # Font Awesome 5.15.4 (solid, regular, brands) that
        },                                 # embed.js's CSS loads beside itself
        extra=(
            ("@jupyter-widgets/schema", "0.5.6",
             "sha512-o8gjK4tzF+pKh5ER0LmUqJOpk2IRGxo+MdosLsJqtw0r00/6e72rTjA9C7uNYamYSpuXDslCe00YHaGdDcTIpw==",
             "LICENSE", "LICENSE"),
            ("@fortawesome/fontawesome-free", "5.15.4",
             "sha512-eYm8vijH/hpzr/6/1CJ/V/Eb1xQFW2nnUKArb3z+yUWv7HTwj6M7SP957oMjfZjAHU6qpoNc2wQvIxBLWYa/Jg==",
             "LICENSE.txt", "fontawesome-free-LICENSE.txt"),
        ),
        notes=["the tarball has no LICENSE file; LICENSE comes from @jupyter-widgets/schema of the "
               "same repository (jupyter-widgets/ipywidgets), the same BSD-3-Clause text",
               "the *.woff2 files are Font Awesome Free 5.15.4 fonts bundled by embed.js (SIL OFL 1.1): "
               "fontawesome-free-LICENSE.txt"],
    ),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm_pack(spec: str, integrity: str, workdir: Path) -> Path:
    """Download ``spec`` (name@version) with npm, check its integrity, unpack it; returns package/."""
    out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(workdir)],
                         cwd=workdir, check=True, capture_output=True, text=True)
    info = json.loads(out.stdout)[0]
    tarball = workdir / info["filename"]
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{spec}: integrity mismatch: the registry's tarball has {algo}-{digest}, "
                         f"this script pins {integrity}")
    target = workdir / info["filename"].removesuffix(".tgz")
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def copy_files(src_root: Path, mapping: dict[str, str], dest: Path) -> list[Path]:
    copied = []
    for src, dst in mapping.items():
        if "*" in src:
            sources = sorted((src_root / src).parent.glob(Path(src).name))
            if not sources:
                raise SystemExit(f"{src}: no files match in the package")
            for p in sources:
                (dest / dst).mkdir(parents=True, exist_ok=True)
                copied.append(Path(shutil.copyfile(p, dest / dst / p.name)))
        elif src.endswith("/"):
            sources = sorted(p for p in (src_root / src).iterdir() if p.is_file())
            if not sources:
                raise SystemExit(f"{src_root / src}: no files")
            for p in sources:
                (dest / dst).mkdir(parents=True, exist_ok=True)
                copied.append(Path(shutil.copyfile(p, dest / dst / p.name)))
        else:
            if not (src_root / src).is_file():
                raise SystemExit(f"{src} is not in the package (did the layout change?)")
            (dest / dst).parent.mkdir(parents=True, exist_ok=True)
            copied.append(Path(shutil.copyfile(src_root / src, dest / dst)))
    return copied


def vendor() -> dict:
    manifest = {"_about": "written by scripts/vendor_js.py: what book/_static holds from npm, "
                          "with the sha256 of every file; do not edit by hand", "packages": {}}
    with tempfile.TemporaryDirectory(prefix="vendor-js-") as tmp:
        workdir = Path(tmp)
        for pkg in PACKAGES:
            dest = STATIC / pkg.dest
            if dest.exists():
                shutil.rmtree(dest)
            src = npm_pack(f"{pkg.name}@{pkg.version}", pkg.integrity, workdir)
            copied = copy_files(src, pkg.files, dest)
            for xname, xversion, xintegrity, xfile, xdest in pkg.extra:
                xsrc = npm_pack(f"{xname}@{xversion}", xintegrity, workdir)
                copied.append(Path(shutil.copyfile(xsrc / xfile, dest / xdest)))
            entry = {
                "version": pkg.version,
                "integrity": pkg.integrity,
                "licence": pkg.licence,
                "files": {p.relative_to(STATIC).as_posix(): sha256(p) for p in sorted(copied)},
            }
            if pkg.extra:
                entry["files_from"] = {f"{pkg.dest}/{x[4]}": f"{x[0]}@{x[1]}: {x[3]}" for x in pkg.extra}
            if pkg.notes:
                entry["notes"] = pkg.notes
            manifest["packages"][pkg.name] = entry
            size = sum(p.stat().st_size for p in copied)
            print(f"{pkg.name}@{pkg.version}: {len(copied)} files, {size / 1e6:.2f} MB -> "
                  f"{dest.relative_to(ROOT)}")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def check() -> list[str]:
    """Problems with book/_static against the manifest and the pins above (empty when all is well)."""
    if not MANIFEST.is_file():
        return [f"{MANIFEST.relative_to(ROOT)} missing: run scripts/vendor_js.py"]
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))["packages"]
    problems = []
    for pkg in PACKAGES:
        entry = manifest.get(pkg.name)
        if entry is None:
            problems.append(f"{pkg.name} not in vendor.json")
            continue
        if entry["version"] != pkg.version or entry["integrity"] != pkg.integrity:
            problems.append(f"{pkg.name}: vendor.json has {entry['version']}, the script pins "
                            f"{pkg.version}: run scripts/vendor_js.py")
        listed = set(entry["files"])
        present = {p.relative_to(STATIC).as_posix()
                   for p in (STATIC / pkg.dest).rglob("*") if p.is_file()}
        for extra in sorted(present - listed):
            problems.append(f"book/_static/{extra}: not from {pkg.name} (not in vendor.json)")
        for rel, digest in entry["files"].items():
            path = STATIC / rel
            if not path.is_file():
                problems.append(f"book/_static/{rel} missing")
            elif sha256(path) != digest:
                problems.append(f"book/_static/{rel} differs from the {pkg.name}@{pkg.version} file")
        if f"{pkg.dest}/LICENSE" not in listed:
            problems.append(f"{pkg.name}: no LICENSE beside the vendored files")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="verify book/_static against vendor.json, download nothing")
    args = parser.parse_args(argv)
    if not args.check:
        if shutil.which("npm") is None:
            print("npm not found: install Node.js", file=sys.stderr)
            return 1
        vendor()
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print("book/_static matches vendor.json")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
