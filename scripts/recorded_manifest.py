"""Write mistral_nb/book/recorded_files.json: the size and SHA-256 of every recorded data file.

    python scripts/recorded_manifest.py

``recorded_path`` and ``load_recorded`` check a file they download (on Colab, or anywhere outside a
checkout) against this manifest, so a truncated or damaged download is refused instead of cached.
Run it after adding or changing anything under benchmarks/results, experiments/results or the
corpora; tests/test_trust_round3.py fails while the manifest and the files disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from mistral_nb.book.results import MANIFEST, manifest_of

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    manifest = manifest_of(ROOT)
    lines = [f" {json.dumps(name)}: {json.dumps(entry)}" for name, entry in sorted(manifest.items())]
    MANIFEST.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"{MANIFEST.relative_to(ROOT)}: {len(manifest)} files, {sum(v['bytes'] for v in manifest.values()):,} bytes")


if __name__ == "__main__":
    main()
