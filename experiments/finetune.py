"""From base to instruct on the book's specimen: SFT (full, LoRA at two ranks, LoRA on int8), then DPO.

    python experiments/finetune.py                 # every run, recorded: experiments/results/finetune.json
    python experiments/finetune.py --quick         # smoke test: a few steps, tiny data, nothing recorded
    python experiments/finetune.py --specimen experiments/results/english_swa   # another recorded model

The data are instructions computed from corpus v2 (``mistral_nb.training.instructions``): training
instructions from training documents, held-out ones from validation documents. Every run starts from
the specimen (``english_v2_swa``, trained on corpus v2 by ``train_english_v2.py``, whose training
documents are disjoint from its validation documents; ``--specimen`` takes another) and is scored on the
held-out instructions by exact match of its greedy answer, asked 0-shot in the chat format. Each run
is a child process of its own (``--child NAME``), so its peak resident memory is its own.

Recorded per run: trainable parameters; the bytes of weights, gradients, AdamW moments and
the activations autograd kept in the first step (measured with saved-tensor hooks) beside
``costs.finetune_memory``'s estimate; peak resident memory of the process; training and evaluation
wall time; the loss of every step; exact match overall and per task; validation perplexity on plain
text (corpus v2 val) after fine-tuning; every held-out answer. DPO starts from the r = 8 LoRA run's
adapter, merged into the weights, and trains a new adapter against the merged model (the reference,
adapters off); it also records how often the model prefers the right answer to the computed wrong
one. The LoRA r = 8 adapter is kept in ``experiments/results/finetune_lora_r8/`` (peft's layout).
Timings are from a shared machine (other jobs ran beside these, niced).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mistral_nb import Tokenizer, load_model  # noqa: E402
from mistral_nb.book.results import machine_info  # noqa: E402
from mistral_nb.costs import finetune_memory, trainable_parameter_count  # noqa: E402
from mistral_nb.evals.language import mean_loss  # noqa: E402
from mistral_nb.lora import apply_lora, load_adapter, save_adapter, unload_lora  # noqa: E402
from mistral_nb.training.corpus import TokenStream, load_documents  # noqa: E402
from mistral_nb.training.dpo import dpo_batches, dpo_objective, encode_pair, pair_batch, sequence_logps  # noqa: E402
from mistral_nb.training.instructions import Instruction, conversation, exact_match, instruction_split  # noqa: E402
from mistral_nb.training.sft import encode_example, fit, sft_batches, sft_loss  # noqa: E402

RESULTS, RUNS_DIR = HERE / "results", HERE / ".runs"
SPECIMEN = "experiments/results/english_v2_swa"   # the model of train_english_v2.py (corpus v2), as recorded
ALL_LINEAR = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
DATA = dict(train_per_task=600, val_per_task=40, seed=0, val_seed=1)
SFT = dict(seq_len=128, batch_size=8, steps=120, seed=0)
RUNS = {
    "base": dict(method="none"),
    "full": dict(method="full", lr=1e-3),
    "lora_r8": dict(method="lora", r=8, alpha=16, targets=ALL_LINEAR, lr=3e-3),
    "lora_r64": dict(method="lora", r=64, alpha=128, targets=ALL_LINEAR, lr=3e-3),
    "lora_r8_int8": dict(method="lora", r=8, alpha=16, targets=ALL_LINEAR, lr=3e-3, quantize="int8"),
    "sft_dpo": dict(method="dpo", start="lora_r8", r=8, alpha=16, targets=ALL_LINEAR, lr=2e-3, beta=0.1,
                    steps=100, batch_size=4),
}
EVAL = dict(val_windows=16, max_new_tokens=40, batch_size=50)
QUICK = dict(train_per_task=20, val_per_task=4, steps=3, val_windows=2)


def data_file(quick: bool) -> Path:
    return RUNS_DIR / f"finetune_data{'_quick' if quick else ''}.json"


def build_data(quick: bool) -> dict:
    """Training and held-out instructions (cached in experiments/.runs/)."""
    path = data_file(quick)
    if path.is_file():
        return json.loads(path.read_text())
    n_train = QUICK["train_per_task"] if quick else DATA["train_per_task"]
    n_val = QUICK["val_per_task"] if quick else DATA["val_per_task"]
    train = instruction_split("train", n_train, seed=DATA["seed"])
    val = instruction_split("val", n_val, seed=DATA["val_seed"], exclude=train)
    data = {"train": [asdict(i) for i in train], "val": [asdict(i) for i in val]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


class SavedBytes:
    """Bytes of the tensors autograd keeps for the backward pass during one loss computation
    (parameters and buffers excluded; a storage counted once)."""

    def __init__(self, model):
        self.keep = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
        self.seen, self.total = {}, None

    def pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.keep:
            self.seen[ptr] = t.untyped_storage().nbytes()
        return t

    def wrap(self, loss_fn):
        def measured(model, batch):
            if self.total is not None:
                return loss_fn(model, batch)
            with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
                loss = loss_fn(model, batch)
            self.total = sum(self.seen.values())
            return loss
        return measured


def build_model(cfg: dict, specimen: str):
    """The specimen, float32, prepared for the run: unfrozen (full), int8 and/or adapters (LoRA)."""
    from mistral_nb.speed.int8 import quantize_model

    model = load_model(specimen, dtype=torch.float32)
    if cfg.get("quantize") == "int8":
        quantize_model(model)
    if cfg["method"] == "full":
        model.requires_grad_(True)
    elif cfg["method"] in ("lora", "dpo"):
        if cfg["method"] == "dpo":
            load_adapter(model, RUNS_DIR / f"finetune_{cfg['start']}_adapter")
            unload_lora(model, merge=True)                 # the SFT model: the reference of DPO
        torch.manual_seed(SFT["seed"])
        apply_lora(model, r=cfg["r"], alpha=cfg["alpha"], targets=cfg["targets"])
    return model


def state_bytes(model, opt_moments: int) -> dict:
    trainable = trainable_parameter_count(model)
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return {"weights": weights, "gradients": trainable * 4, "AdamW moments": opt_moments}


def preference_accuracy(model, pairs) -> float:
    """Share of held-out pairs where the model gives the right answer more probability than the wrong one."""
    wins = 0
    with torch.no_grad():
        for i in range(0, len(pairs), 16):
            chosen, rejected = sequence_logps(model, pair_batch(pairs[i:i + 16])).chunk(2)
            wins += int((chosen > rejected).sum())
    return wins / len(pairs)


def evaluate(model, tok, val, val_pairs, windows, quick: bool) -> dict:
    t0 = time.perf_counter()
    scores = exact_match(model, tok, val, max_new_tokens=EVAL["max_new_tokens"], batch_size=EVAL["batch_size"])
    ppl = float(torch.tensor(mean_loss(model, windows, ignore_ids=(tok.bos_id,))).exp())
    return {"exact_match": scores["overall"], "exact_match_per_task": scores["per_task"],
            "answers": scores["answers"], "val_perplexity": ppl,
            "prefers_right_answer": preference_accuracy(model, val_pairs),
            "eval_seconds": round(time.perf_counter() - t0, 1)}


def train_run(name: str, cfg: dict, model, tok, train, quick: bool) -> dict:
    """Fit the run's objective; returns what was measured while training."""
    steps = QUICK["steps"] if quick else cfg.get("steps", SFT["steps"])
    if cfg["method"] == "dpo":
        pairs = [encode_pair(tok, conversation(i)[:1], i.answer, i.wrong) for i in train]
        batches, loss_fn = dpo_batches(pairs, cfg["batch_size"]), dpo_objective(beta=cfg["beta"])
    else:
        examples = [e for e in (encode_example(tok, conversation(i)) for i in train) if len(e) - 1 <= SFT["seq_len"]]
        batches, loss_fn = sft_batches(examples, SFT["batch_size"], SFT["seq_len"], seed=SFT["seed"]), sft_loss
    saved = SavedBytes(model)
    t0 = time.perf_counter()
    history = fit(model, batches, steps=steps, loss_fn=saved.wrap(loss_fn), lr=cfg["lr"],
                  warmup=max(1, steps // 10), seed=SFT["seed"])
    seconds = time.perf_counter() - t0
    moments = 2 * trainable_parameter_count(model) * 4
    n_examples = len(pairs) if cfg["method"] == "dpo" else len(examples)
    return {"steps": steps, "examples": n_examples, "loss": [round(x, 4) for x in history.loss],
            "train_seconds": round(seconds, 1),
            "trainable_parameters": trainable_parameter_count(model),
            "memory_bytes": {**state_bytes(model, moments), "activations (first step, measured)": saved.total}}


def child(name: str, specimen: str, quick: bool, out: Path) -> None:
    """One run in this process: build, train (unless base), save the adapter, evaluate, write JSON."""
    torch.manual_seed(0)
    cfg, data, tok = RUNS[name], build_data(quick), Tokenizer.mistral_v1()
    train = [Instruction(**d) for d in data["train"]]
    val = [Instruction(**d) for d in data["val"]]
    val_pairs = [encode_pair(tok, conversation(i)[:1], i.answer, i.wrong) for i in val]
    n = QUICK["val_windows"] if quick else EVAL["val_windows"]
    windows = TokenStream.from_documents(load_documents("val", corpus="v2"), tok).windows(512, max_windows=n)
    model = build_model(cfg, specimen)
    record = {"name": name, **{k: v for k, v in cfg.items() if k != "targets"},
              "targets": list(cfg.get("targets", ()))}
    if cfg["method"] != "none":
        record.update(train_run(name, cfg, model, tok, train, quick))
        if cfg["method"] == "lora":
            save_adapter(model, RUNS_DIR / f"finetune_{name}_adapter", base_model_name_or_path=specimen)
    record.update(evaluate(model, tok, val, val_pairs, windows, quick))
    record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.write_text(json.dumps(record))


def estimate(specimen: str, cfg: dict) -> dict:
    """costs.finetune_memory for the run's settings (float32 on a CPU: 4 bytes per value)."""
    from mistral_nb.checkpoint.layout import read_args

    args = read_args(Path(specimen))
    method = "full" if cfg["method"] == "full" else "lora"
    batch = cfg.get("batch_size", SFT["batch_size"]) * (2 if cfg["method"] == "dpo" else 1)
    return finetune_memory(args, batch, SFT["seq_len"], method, cfg.get("r", 8), cfg.get("targets", ()),
                           quantize=cfg.get("quantize"), bytes_per_value=4)


def peft_parity(specimen: str, tok) -> dict:
    """The largest logit differences between this package and transformers + peft on the specimen
    itself, both ways: our adapter loaded by peft, and peft's adapter loaded by us (random B)."""
    import tempfile

    try:
        import peft
        from transformers import MistralForCausalLM
    except ImportError:
        return {"skipped": "peft is not installed"}
    from mistral_nb import save_checkpoint
    from mistral_nb.lora import lora_layers

    hf_names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    text = load_documents("val", corpus="v2")[0]
    x = torch.tensor([tok.encode(text, bos=True)[:256]])
    out = {"peft": peft.__version__, "tokens": x.shape[1]}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        tmp = Path(tmp)
        save_checkpoint(load_model(specimen, dtype=torch.float32), tmp / "hf", layout="hf")
        ours = apply_lora(load_model(specimen, dtype=torch.float32), r=8, alpha=16, targets=ALL_LINEAR)
        gen = torch.Generator().manual_seed(0)
        for _, layer in lora_layers(ours):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=gen) * 0.02)
        save_adapter(ours, tmp / "ours")
        theirs = peft.PeftModel.from_pretrained(MistralForCausalLM.from_pretrained(str(tmp / "hf")), str(tmp / "ours"))
        a, b = ours(x), theirs.eval()(x).logits
        out["ours_to_peft"] = {"max_abs": float((a - b).abs().max()), "max_logit": float(b.abs().max())}
        config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=hf_names, task_type="CAUSAL_LM")
        torch.manual_seed(1)
        fresh = peft.get_peft_model(MistralForCausalLM.from_pretrained(str(tmp / "hf")), config)
        for n, p in fresh.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        fresh.save_pretrained(str(tmp / "peft"))
        mine = load_adapter(load_model(specimen, dtype=torch.float32), tmp / "peft")
        a, b = mine(x), fresh.eval()(x).logits
        out["peft_to_ours"] = {"max_abs": float((a - b).abs().max()), "max_logit": float(b.abs().max())}
    return out


def samples(data: dict, runs: dict, per_task: int = 2) -> list:
    """The first held-out instructions of each task, with every run's answer."""
    rows, seen = [], {}
    for k, ins in enumerate(data["val"]):
        if seen.get(ins["task"], 0) < per_task:
            seen[ins["task"]] = seen.get(ins["task"], 0) + 1
            rows.append({"task": ins["task"], "prompt": ins["prompt"], "answer": ins["answer"],
                         **{name: r["answers"][k] for name, r in runs.items()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps on tiny data; nothing recorded")
    ap.add_argument("--specimen", default=SPECIMEN, help="recorded model directory (Mistral layout)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=SFT["steps"], help="SFT steps of each run")
    ap.add_argument("--only", nargs="*", default=None, help="some runs only (nothing recorded)")
    ap.add_argument("--reuse", nargs="*", default=(), help="runs whose result in experiments/.runs/ is kept")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    SFT["steps"] = a.steps
    if a.child:
        return child(a.child, a.specimen, a.quick, Path(a.out))
    data, runs = build_data(a.quick), {}
    for name in a.only or RUNS:
        out = RUNS_DIR / f"finetune_{name}{'_quick' if a.quick else ''}.json"
        cmd = [sys.executable, __file__, "--child", name, "--out", str(out), "--specimen", a.specimen,
               "--threads", str(a.threads), "--steps", str(a.steps)] + (["--quick"] if a.quick else [])
        t0 = time.perf_counter()
        if name not in a.reuse or not out.is_file():
            subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        runs[name] = json.loads(out.read_text())
        runs[name]["estimate_bytes"] = estimate(a.specimen, RUNS[name]) if RUNS[name]["method"] != "none" else None
        r = runs[name]
        print(f"{name}: exact match {r['exact_match']:.3f} {r['exact_match_per_task']}, val ppl {r['val_perplexity']:.2f}, "
              f"prefers right {r['prefers_right_answer']:.3f}, {time.perf_counter() - t0:.0f} s", flush=True)
    if a.quick or a.only:
        return
    record = {"command": f"python experiments/finetune.py --specimen {a.specimen} --threads {a.threads} --steps {a.steps}",
              "machine": machine_info(), "specimen": a.specimen, "data": DATA, "sft": SFT, "eval": EVAL,
              "n_train": len(data["train"]), "n_val": len(data["val"]), "runs": runs,
              "samples": samples(data, runs), "peft_parity": peft_parity(a.specimen, Tokenizer.mistral_v1()),
              "note": "wall times measured on a shared 2-core machine, niced, beside other jobs"}
    (RESULTS / "finetune.json").write_text(json.dumps(record, indent=1) + "\n")
    import shutil

    shutil.copytree(RUNS_DIR / "finetune_lora_r8_adapter", RESULTS / "finetune_lora_r8", dirs_exist_ok=True)
    print(f"recorded {RESULTS / 'finetune.json'}")


if __name__ == "__main__":
    main()
