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


def test_cpu_7b_script_runs_in_smoke_mode(tmp_path):
    """The 7B benchmark's whole path (checkpoint writing, the three child processes, the summary) on a
    2-layer model of the real vocabulary; nothing is recorded."""
    cmd = [sys.executable, "benchmarks/cpu_7b.py", "--tiny", "--dir", str(tmp_path / "ckpt"), "--rounds", "1",
           "--reps", "1", "--prompt", "8", "--new", "4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    from mistral_nb.speed.cpu_pack import pack_available

    methods = ("ours_bf16", "ours_bf16_packed", "ours_int8", "hf_bf16") if pack_available() else ("ours_bf16", "ours_int8", "hf_bf16")
    for method in methods:
        assert f"'method': '{method}'" in done.stdout, done.stdout
    assert "int8_over_bf16_decode_tokens_per_s" in done.stdout and "tiny run: nothing recorded" in done.stdout
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").is_file()


def test_cpu_7b_script_refuses_tiny_without_a_scratch_directory():
    done = subprocess.run([sys.executable, "benchmarks/cpu_7b.py", "--tiny"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "--tiny needs --dir" in done.stderr
