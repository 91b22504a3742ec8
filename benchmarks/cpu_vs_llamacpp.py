"""Mistral 7B on this CPU, this package against llama.cpp, format by format: bf16, 8-bit, 4-bit.

The same random weights of ``ModelArgs.mistral_7b()``'s exact shapes (benchmarks/cpu_7b.py's
checkpoint, bf16) in every format: this package loads the safetensors files, llama.cpp reads GGUF
files converted from them by ``checkpoint.gguf.convert_to_gguf`` (the blocks' linear weights in the
format, the embedding and the output head in BF16 in both programs):

* ``ours_bf16_packed``  ``load_model(dtype=bfloat16, pack=True)``   vs ``llamacpp_bf16``  (BF16 file); on a
  CPU where oneDNN has no bf16 kernel (``pack_available()`` false, e.g. AVX2 without AVX512-BF16),
  ``ours_bf16`` (``load_model(dtype=bfloat16)``, PyTorch's own bf16 matrix products) takes its place;
* ``ours_int8``         ``load_model(..., quantize="int8")``        vs ``llamacpp_q8_0``  (Q8_0 file);
* ``ours_int4``         ``load_model(..., quantize="int4")`` (group 32, symmetric, PyTorch's int4
  kernel) vs ``llamacpp_q4_0`` (Q4_0 file); ``ours_int4_g128`` (group 128) can be added with --methods.

Every configuration runs in a fresh process, 2 threads, interleaved over ``--rounds`` rounds. Each
process first measures the memory read bandwidth (a read-only sum over 1 GB, as cpu_7b.py), then:
ours loads the model and generates 33 tokens after a 128-token prompt, ``--reps`` times after a
warm-up (prefill = time to the first token, decode = the 32 steps after it); llama.cpp's own
``llama-bench -p 128 -n 32 -t 2 -r REPS -o json`` (prompt processing of 128 tokens, and generation of
32). Decode GB/s = bytes read per token (every weight once, one embedding row) x tokens/s; the
ceiling = the run's median read bandwidth / those bytes. Peak memory: the process's peak resident set
(for llama.cpp, whose file is memory-mapped, the pages of the file it touched count as well).

    LLAMA_BENCH=/path/to/llama-bench python benchmarks/cpu_vs_llamacpp.py   # a quiet machine: records
                                                                          # results/cpu_vs_llamacpp.json
    LLAMA_BENCH=... python benchmarks/cpu_vs_llamacpp.py --name cpu_vs_llamacpp_avx2   # on an AVX2-only CPU
    python benchmarks/cpu_vs_llamacpp.py --tiny --dir /tmp/scratch          # 2 layers; llama.cpp only if given

Needs the 14.5 GB checkpoint (written once, as cpu_7b.py does), 26 GB more for the three GGUF files
(kept beside it), ~16 GB of free RAM, and about an hour. Building llama.cpp: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cpu_7b import DEFAULT_DIR, GB, bandwidth, bench_args, timed_runs, write_checkpoint  # noqa: E402

OURS = {"ours_bf16_packed": dict(pack=True), "ours_bf16": {}, "ours_int8": dict(quantize="int8"), "ours_int4": dict(quantize="int4"),
        "ours_int4_g128": dict(quantize="int4_g128")}
LLAMA = {"llamacpp_bf16": "BF16", "llamacpp_q8_0": "Q8_0", "llamacpp_q4_0": "Q4_0"}
METHODS = tuple(OURS) + tuple(LLAMA)
DEFAULT_METHODS = ("ours_bf16_packed", "llamacpp_bf16", "ours_int8", "llamacpp_q8_0", "ours_int4", "llamacpp_q4_0")
PAIRS = {"bf16": ("ours_bf16_packed", "llamacpp_bf16"), "bf16 (plain)": ("ours_bf16", "llamacpp_bf16"), "8-bit": ("ours_int8", "llamacpp_q8_0"),
         "4-bit": ("ours_int4", "llamacpp_q4_0")}


def gguf_path(ckpt: Path, quant: str) -> Path:
    return ckpt / "gguf" / f"mistral-7b-random-{quant.lower()}.gguf"


def convert(ckpt: Path, quants) -> None:
    """The GGUF files of the checkpoint (written once; the blocks' matrices in ``quant``, the rest BF16)."""
    from mistral_nb.checkpoint.gguf import convert_to_gguf

    for quant in quants:
        path = gguf_path(ckpt, quant)
        if path.is_file():
            continue
        t0 = time.perf_counter()
        convert_to_gguf(ckpt, path, quant=quant, float_type="BF16", name="mistral-7b-random")
        print(f"wrote {path.name} ({path.stat().st_size / GB:.2f} GB, {time.perf_counter() - t0:.0f} s)", flush=True)


def gguf_read_per_token(path: Path) -> int:
    """Bytes one decode step reads from a GGUF file: every tensor once, one row of the embedding."""
    from mistral_nb.checkpoint.gguf import read_gguf
    from mistral_nb.checkpoint.gguf_blocks import encoded_nbytes

    _, tensors = read_gguf(path)
    total = sum(encoded_nbytes(shape, kind) for shape, kind, _ in tensors.values())
    shape, kind, _ = tensors["token_embd.weight"]
    return total - encoded_nbytes(shape, kind) + encoded_nbytes((1, shape[1]), kind)


# ----------------------------------------------------------------------------- one measurement process
def child_ours(method: str, path: Path, prompt_len: int, new_tokens: int, reps: int, profile: bool) -> dict:
    from common import PeakRSS

    from mistral_nb import generate, load_model
    from mistral_nb.costs import decode_bytes_per_token, model_nbytes

    out = {"method": method, **bandwidth()}
    torch.manual_seed(0)
    prompt = torch.randint(3, 32000, (prompt_len,)).tolist()
    with PeakRSS(interval=0.01) as rss:
        t0 = time.perf_counter()
        model = load_model(path, dtype=torch.bfloat16, progress=False, **OURS[method])
        out["load_s"] = round(time.perf_counter() - t0, 1)

        def run(n, stamp):
            return generate(model, [prompt], max_new_tokens=n, on_token=lambda t: stamp())[0]

        prefill, decode, tokens = timed_runs(run, new_tokens, reps)
    out.update(weights_gb=round(model_nbytes(model) / GB, 3), read_per_token_gb=round(decode_bytes_per_token(model) / GB, 4),
               peak_rss_gb=round(rss.peak / GB, 3), prefill_s=[round(x, 3) for x in prefill],
               decode_s=[round(x, 3) for x in decode], greedy_tokens=tokens)
    out.update(_rates(out, prompt_len / statistics.median(prefill), new_tokens / statistics.median(decode)))
    if profile:
        out["profile"] = _profile(model, prompt)
    return out


def _rates(out: dict, prefill_tps: float, decode_tps: float) -> dict:
    return {"prefill_tokens_per_s": round(prefill_tps, 2), "decode_tokens_per_s": round(decode_tps, 3),
            "decode_gb_per_s": round(out["read_per_token_gb"] * decode_tps, 2),
            "ceiling_tokens_per_s": round(out["read_gb_per_s"] / out["read_per_token_gb"], 3)}


def _profile(model, prompt: list, steps: int = 8, prefill_tokens: int = 32) -> dict:
    """Where the time goes: the ops' share of self CPU time over ``steps`` decode steps after one token,
    and over one prefill of the prompt's first ``prefill_tokens`` tokens (the same kernels as the full
    prompt's: every format takes the same path at 32 rows as at 128)."""
    from mistral_nb import generate

    def shares(prof) -> tuple:
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        return round(total / 1e3, 1), [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
                                       for e in events[:8]]

    prefill_tokens = min(prefill_tokens, len(prompt))
    generate(model, [prompt[:8]], max_new_tokens=2)                         # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        generate(model, [prompt[:1]], max_new_tokens=steps)
    total_ms, ops = shares(prof)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        generate(model, [prompt[:prefill_tokens]], max_new_tokens=1)
    prefill_ms, prefill_ops = shares(prof)
    return {"steps": steps, "total_ms": total_ms, "ops": ops,
            "prefill_tokens": prefill_tokens, "prefill_total_ms": prefill_ms, "prefill_ops": prefill_ops}


def child_llama(method: str, ckpt: Path, bench: str, prompt_len: int, new_tokens: int, reps: int, threads: int) -> dict:
    out = {"method": method, **bandwidth()}                 # its 2 GB are freed before llama-bench starts
    path = gguf_path(ckpt, LLAMA[method])
    cmd = [bench, "-m", str(path), "-p", str(prompt_len), "-n", str(new_tokens), "-t", str(threads), "-r", str(reps),
           "-o", "json"]
    returncode, stdout, stderr, peak = run_with_peak_rss(cmd)
    if returncode != 0:
        raise RuntimeError(f"llama-bench failed (exit {returncode}): {stderr[-2000:]}")
    tests = json.loads(stdout)
    pp = next(t for t in tests if t["n_prompt"] == prompt_len and t["n_gen"] == 0)
    tg = next(t for t in tests if t["n_gen"] == new_tokens and t["n_prompt"] == 0)
    out.update(command=" ".join(["llama-bench"] + cmd[1:2] + [path.name] + cmd[3:]), build_commit=pp["build_commit"],
               cpu_info=pp["cpu_info"], model_type=pp["model_type"], weights_gb=round(pp["model_size"] / GB, 3),
               read_per_token_gb=round(gguf_read_per_token(path) / GB, 4),
               prefill_samples_tokens_per_s=[round(x, 2) for x in pp["samples_ts"]],
               decode_samples_tokens_per_s=[round(x, 3) for x in tg["samples_ts"]],
               settings={k: pp[k] for k in ("n_batch", "n_ubatch", "type_k", "type_v", "flash_attn", "repack")
                         if k in pp})
    out["peak_rss_gb"] = round(peak / GB, 3)
    out.update(_rates(out, statistics.median(pp["samples_ts"]), statistics.median(tg["samples_ts"])))
    return out


def run_with_peak_rss(cmd: list, interval: float = 0.05) -> tuple:
    """Run ``cmd``; (exit code, stdout, stderr, peak resident bytes of that program). The peak is its
    ``VmHWM`` (high-water mark of its own address space), read while it runs: a fork of this process
    would count this process's pages too (``ru_maxrss`` of a child includes what it held before exec)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) * 1024)
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(interval)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), peak


# ----------------------------------------------------------------------------- the summary
KEYS = ("load_s", "weights_gb", "read_per_token_gb", "peak_rss_gb", "prefill_tokens_per_s", "decode_tokens_per_s",
        "decode_gb_per_s")


def summarize(runs: list, methods) -> tuple[dict, dict, float]:
    """Medians per method over the rounds (one bandwidth figure for every ceiling: the run's median),
    and for each format the targets: our decode and prefill >= llama.cpp's, our decode >= 80 % of the ceiling."""
    bw = round(statistics.median(x["read_gb_per_s"] for x in runs), 2)
    summary = {}
    for m in methods:
        rs = [x for x in runs if x["method"] == m]
        summary[m] = {k: round(statistics.median(x[k] for x in rs), 3) for k in KEYS if k in rs[0]}
        summary[m]["ceiling_tokens_per_s"] = round(bw / summary[m]["read_per_token_gb"], 3)
        summary[m]["fraction_of_ceiling"] = round(summary[m]["decode_tokens_per_s"] / summary[m]["ceiling_tokens_per_s"], 3)
    targets = {}
    for fmt, (ours, theirs) in PAIRS.items():
        if ours in summary and theirs in summary:
            o, t = summary[ours], summary[theirs]
            targets[fmt] = {"decode_ours_over_llamacpp": round(o["decode_tokens_per_s"] / t["decode_tokens_per_s"], 3),
                            "prefill_ours_over_llamacpp": round(o["prefill_tokens_per_s"] / t["prefill_tokens_per_s"], 3),
                            "ours_fraction_of_ceiling": o["fraction_of_ceiling"],
                            "llamacpp_fraction_of_ceiling": t["fraction_of_ceiling"]}
            targets[fmt].update(decode_met=targets[fmt]["decode_ours_over_llamacpp"] >= 1,
                                prefill_met=targets[fmt]["prefill_ours_over_llamacpp"] >= 1,
                                bandwidth_met=o["fraction_of_ceiling"] >= 0.8)
    return summary, targets, bw


# ----------------------------------------------------------------------------- the driver
def earlier_record(a) -> dict:
    """The record ``--append`` adds rounds to, refused (SystemExit, naming why) unless it was made with the
    same prompt, decode steps, threads and repetitions, on a CPU of the same model."""
    from common import RESULTS, machine

    path = RESULTS / f"{a.name}.json"
    if not path.is_file():
        sys.exit(f"cpu_vs_llamacpp: --append: no record {path.name} to add rounds to")
    prior = json.loads(path.read_text())
    for key, ours in (("prompt_tokens", a.prompt), ("new_tokens", a.new), ("threads", a.threads), ("reps", a.reps)):
        if prior.get(key) != ours:
            sys.exit(f"cpu_vs_llamacpp: --append: {path.name} has {key} = {prior.get(key)}, this run {ours}")
    if prior["machine"].get("cpu") != machine().get("cpu"):
        sys.exit(f"cpu_vs_llamacpp: --append: {path.name} was recorded on another CPU ({prior['machine'].get('cpu')})")
    return prior


def _run_child(a, method: str, profile: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--dir", str(a.dir), "--prompt", str(a.prompt), "--new",
           str(a.new), "--reps", str(a.reps), "--threads", str(a.threads)] + (["--profile"] if profile else [])
    if method in LLAMA:
        cmd += ["--llama-bench", a.llama_bench]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"cpu_vs_llamacpp: {method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the random 7B checkpoint (as cpu_7b.py; GGUF files go in DIR/gguf)")
    p.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"), help="llama.cpp's llama-bench ($LLAMA_BENCH)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the methods")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per process (after a warm-up)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens (the prefill)")
    p.add_argument("--new", type=int, default=32, help="decode steps timed")
    p.add_argument("--threads", type=int, default=2, help="threads of both programs")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    p.add_argument("--no-profile", action="store_true", help="skip the profile of our decode step")
    p.add_argument("--name", default="cpu_vs_llamacpp",
                   help="the record: benchmarks/results/NAME.json (one per machine kind: cpu_vs_llamacpp_avx2 for AVX2)")
    p.add_argument("--append", action="store_true",
                   help="add --rounds rounds to the existing record NAME (same settings, same CPU), numbered after its own")
    p.add_argument("--tiny", action="store_true", help="smoke test: a 2-layer model, --dir required, nothing recorded")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    a = parse_args()
    if a.child:
        torch.set_num_threads(a.threads)
        res = (child_ours(a.child, a.dir, a.prompt, a.new, a.reps, a.profile) if a.child in OURS else
               child_llama(a.child, a.dir, a.llama_bench, a.prompt, a.new, a.reps, a.threads))
        print("RESULT " + json.dumps(res), flush=True)
        return
    if a.tiny and a.dir == DEFAULT_DIR:
        sys.exit("cpu_vs_llamacpp: --tiny needs --dir (a scratch directory)")
    if not a.llama_bench or not Path(a.llama_bench).is_file():
        if not a.tiny:
            sys.exit("cpu_vs_llamacpp: give llama.cpp's llama-bench (--llama-bench or $LLAMA_BENCH); "
                     "benchmarks/README.md says how to build it")
        print("no llama-bench: measuring this package only", flush=True)
        a.methods = [m for m in a.methods if m not in LLAMA]
    from mistral_nb.speed.cpu_pack import pack_available

    if "ours_bf16_packed" in a.methods and not pack_available():     # e.g. an AVX2 CPU without bf16 in oneDNN
        print("no oneDNN bf16 kernel on this CPU (pack=True unavailable): ours_bf16 in place of ours_bf16_packed",
              flush=True)
        a.methods = list(dict.fromkeys("ours_bf16" if m == "ours_bf16_packed" else m for m in a.methods))
    from mistral_nb.checkpoint.hub import available_ram

    free = available_ram()
    if free is not None and free < 16 * GB and not a.tiny:
        sys.exit(f"cpu_vs_llamacpp: {free / GB:.1f} GB of RAM free; the bf16 model needs ~16 GB")
    prior = earlier_record(a) if a.append else {}
    if prior:
        a.methods = list(prior["summary"])
    write_checkpoint(a.dir, a.tiny)
    convert(a.dir, [LLAMA[m] for m in a.methods if m in LLAMA])
    runs = []
    first = 1 + max(x["round"] for x in prior["runs"]) if prior else 0
    for r in range(first, first + a.rounds):
        for method in a.methods:
            res = {**_run_child(a, method), "round": r}
            runs.append(res)
            print({k: v for k, v in res.items() if k not in ("greedy_tokens",)}, flush=True)
    runs = prior.get("runs", []) + runs
    profiles = ({} if a.no_profile else {m: _run_child(a, m, profile=True)["profile"] for m in a.methods if m in OURS}) \
        or prior.get("profiles", {})
    for m, prof in profiles.items():
        print(f"profile of {m}, {prof['steps']} decode steps:", [(o["op"], o["share"]) for o in prof["ops"]], flush=True)
        print(f"profile of {m}, prefill of {prof['prefill_tokens']} tokens:",
              [(o["op"], o["share"]) for o in prof["prefill_ops"]], flush=True)
    summary, targets, bw = summarize(runs, a.methods)
    print("summary:", json.dumps(summary, indent=1), "\ntargets:", json.dumps(targets, indent=1), flush=True)
    if a.tiny:
        print("tiny run: nothing recorded")
        return
    from common import record

    record(a.name, {"checkpoint": "random bf16, ModelArgs.mistral_7b() shapes (benchmarks/cpu_7b.py)",
                               "gguf": "checkpoint.gguf.convert_to_gguf: blocks' matrices in the format, embedding "
                                       "and output head BF16", "prompt_tokens": a.prompt, "new_tokens": a.new,
                               "threads": a.threads, "rounds": first + a.rounds, "reps": a.reps, "read_gb_per_s": bw,
                               **({"earlier_commands": prior.get("earlier_commands", []) + [prior["command"]]} if prior else {}),
                               "summary": summary, "targets": targets, "profiles": profiles, "runs": runs})


if __name__ == "__main__":
    main()
