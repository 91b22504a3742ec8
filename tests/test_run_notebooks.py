"""scripts/run_notebooks.py: what it does to a notebook's outputs before committing it."""

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_join_streams_joins_consecutive_pieces_of_one_stream_only():
    join = load_script().join_streams
    out = nbformat.v4.new_output
    outputs = [out("stream", name="stdout", text="banded == dense:"), out("stream", name="stdout", text=" True\n"),
               out("stream", name="stderr", text="warning\n"), out("stream", name="stdout", text="after\n"),
               out("execute_result", data={"text/plain": "1"}, execution_count=1),
               out("stream", name="stdout", text="last\n")]
    joined = join(outputs)
    assert [(o["output_type"], o.get("name"), o.get("text")) for o in joined] == [
        ("stream", "stdout", "banded == dense: True\n"), ("stream", "stderr", "warning\n"),
        ("stream", "stdout", "after\n"), ("execute_result", None, None), ("stream", "stdout", "last\n")]
    assert join([]) == []
