"""The GPU benchmark cannot run here, but its code path can: a tiny model on the CPU, nothing recorded.
(Benchmarks are never timed in tests; this only keeps the script from rotting between GPU sessions.)"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent


def test_gpu_decode_script_runs_in_smoke_mode():
    cmd = [sys.executable, "benchmarks/gpu_decode.py", "--tiny", "--device", "cpu", "--no-compile", "--no-record",
           "--repeats", "1", "--new", "4", "--prompt", "8"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("copy bandwidth", "decode eager", "attention S=512, W=64", "prefill of 512 tokens"):
        assert line in done.stdout, done.stdout
    assert "recorded" not in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_decode_script_explains_a_missing_gpu():
    done = subprocess.run([sys.executable, "benchmarks/gpu_decode.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "no CUDA device" in done.stderr
