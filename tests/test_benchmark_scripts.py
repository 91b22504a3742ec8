"""The GPU benchmark cannot run here, but its code path can: a tiny model on the CPU, nothing recorded.
(Benchmarks are never timed in tests; this only keeps the script from rotting between GPU sessions.)"""

import os
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
    import ast
    import re

    for line in done.stdout.splitlines():                      # every measured figure is a sane positive number
        if line.startswith("{'method'"):
            res = ast.literal_eval(line)
            for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "decode_gb_per_s", "load_s"):
                assert 0 < res[key] < 1e7, (key, res[key])
            assert len(res["decode_s"]) == 1 and res["decode_s"][0] > 0
    assert not re.search(r"tokens_per_s': -", done.stdout)


def test_long_running_scripts_say_what_they_cost():
    for script, words in (("benchmarks/cpu_7b.py", ("14.5 GB of disk", "16 GB", "minutes", "Overwrites", "(default: 2)")),
                          ("experiments/train_english.py", ("RAM", "disk", "minutes", "overwrites", "(default")),
                          ("experiments/train_english_v2.py", ("RAM", "Disk", "minutes", "overwrites", "(default"))):
        out = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        for w in words:
            assert w in out.stdout, (script, w)


def test_cpu_7b_script_refuses_tiny_without_a_scratch_directory():
    done = subprocess.run([sys.executable, "benchmarks/cpu_7b.py", "--tiny"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "--tiny needs --dir" in done.stderr


def test_cpu_gemm_peak_script_runs_in_smoke_mode():
    """The roofline's CPU benchmark on small shapes: CPU description, kernels, rates; nothing recorded."""
    cmd = [sys.executable, "benchmarks/cpu_gemm_peak.py", "--quick", "--no-record", "--repeats", "1", "--processes", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("CPU:", "kernels:", "GFLOP/s", "read bandwidth:", "peak_gflop_per_s", "nothing recorded"):
        assert line in done.stdout, done.stdout
    assert "float32" in done.stdout and "bf16" in done.stdout


def test_cpu_vs_llamacpp_script_runs_in_smoke_mode(tmp_path):
    """The side-by-side benchmark's whole path on a 2-layer model without llama.cpp: checkpoint, our
    three formats each in a fresh process, the profile of a decode step, the summary; nothing recorded."""
    cmd = [sys.executable, "benchmarks/cpu_vs_llamacpp.py", "--tiny", "--dir", str(tmp_path / "ckpt"), "--rounds", "1",
           "--reps", "1", "--prompt", "8", "--new", "4", "--llama-bench", str(tmp_path / "no-llama-bench")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no llama-bench: measuring this package only" in done.stdout and "tiny run: nothing recorded" in done.stdout
    import ast

    seen = set()
    for line in done.stdout.splitlines():
        if line.startswith("{'method'"):
            res = ast.literal_eval(line)
            seen.add(res["method"])
            for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "decode_gb_per_s", "peak_rss_gb", "read_gb_per_s"):
                assert 0 < res[key] < 1e7, (key, res[key])
    assert seen in ({"ours_bf16_packed", "ours_int8", "ours_int4"}, {"ours_bf16", "ours_int8", "ours_int4"})
    assert "profile of ours_int4, 8 decode steps: [(" in done.stdout and "summary:" in done.stdout
    assert "profile of ours_int4, prefill of 8 tokens: [(" in done.stdout      # the whole 8-token prompt


def test_cpu_vs_llamacpp_script_needs_llama_bench_for_a_recorded_run():
    done = subprocess.run([sys.executable, "benchmarks/cpu_vs_llamacpp.py", "--llama-bench", "/nonexistent"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "llama-bench" in done.stderr and "benchmarks/README.md" in done.stderr


def test_quant_quality_script_runs_in_smoke_mode():
    """The quality measurement on 4 short held-out windows of the English model; nothing recorded."""
    cmd = [sys.executable, "benchmarks/quant_quality.py", "--quick", "--no-layer", "--no-record", "--threads", "2"]
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CPP_PYTHON"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("int8, head int8", "int4 g32 symmetric, head float", "GPTQ int4 g128 zero point, head float",
                 "ggml Q4_0 rounding, head float"):
        assert f"{name}: {{'tokens'" in done.stdout, name
    assert "nothing recorded" in done.stdout


@pytest.mark.parametrize("extra,message", [(["--name", "no_such_record"], "no record no_such_record.json"),
                                           (["--reps", "5"], "has reps = 2, this run 5")])
def test_cpu_vs_llamacpp_append_refuses_a_record_it_cannot_extend(tmp_path, extra, message):
    done = subprocess.run([sys.executable, "benchmarks/cpu_vs_llamacpp.py", "--tiny", "--dir", str(tmp_path), "--append",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert not any(tmp_path.iterdir())                                  # refused before writing anything
