"""What the specimen (``train_english_v2.py``) learned, measured on two held-out sets.

    python experiments/train_english_v2.py analyze          # writes experiments/results/english_v2.json

* perplexity of the specimen, its full-attention twin (when trained) and four baselines — uniform,
  add-one unigram and Kneser–Ney bigram fitted on the v2 training tokens, and the v1 specimen
  (chapter 12's first model) — on the v2 validation split (the training sources' held-out documents)
  and on the out-of-domain set (sources in no training document), all on the same targets;
* the gap between training and held-out loss;
* greedy and top-p samples from a held-out prompt of every source;
* heads, each against a control: previous-token heads (against an even spread over the window),
  attention sinks on windows that start at a document's ``<s>`` (against windows that start
  mid-document), duplicate-token heads (against an even spread), induction on random sequences drawn
  from the training unigram and on held-out text read twice (against a second half that is not a
  repeat);
* sliding window against full attention (loss by position and by context length), the rolling cache
  far past the window, int8 weights with the output head in float and in int8.
"""

from __future__ import annotations

import copy
import json
import math
import time

import torch

from experiments.train_english_v2 import RESULTS, SEQ_LEN, WINDOWS, model_dir, stream
from mistral_nb import Tokenizer, generate, load_model
from mistral_nb.book.results import machine_info
from mistral_nb.evals.heads import (attention_maps, duplicate_token_scores, first_token_scores, induction_scores,
                                    previous_token_scores, sampled_tokens, top_heads)
from mistral_nb.evals.language import loss_by_context, per_token_losses
from mistral_nb.evals.ngram import BigramLM, UnigramLM, uniform_loss
from mistral_nb.speed.int8 import quantize_model
from mistral_nb.training.corpus import document_sources, load_documents

CONTEXTS = [1, 2, 4, 8, 16, 32, 48, 63, 64, 96, 128, 192, 256, 320, 378, 448]
N_CONTEXT_TARGETS, N_CONTEXT_WINDOWS = 64, 128
REPEAT_LEN, REPEAT_SEQUENCES = 40, 64          # induction: <s> + 40 tokens + the same 40 again
HEAD_LEN, HEAD_TEXTS = 64, 48                  # heads on the first 64 tokens of held-out documents
TRAIN_WINDOWS = 256                            # training-set loss on this many random windows


def _r(x, n=4):
    return [round(float(v), n) for v in x] if hasattr(x, "__len__") else round(float(x), n)


def _mean_loss(model, windows, bos) -> float:
    loss, keep = per_token_losses(model, windows, ignore_ids=(bos,))
    return float(loss[keep].double().mean())


def perplexities(models: dict, streams: dict, train_ids: torch.Tensor, tok, quick: bool) -> dict:
    """Losses of every model and baseline on every held-out set, on identical targets."""
    bos = tok.bos_id
    uni = UnigramLM(tok.vocab_size, ignore_ids=(bos,)).fit(train_ids)
    bi = BigramLM(tok.vocab_size, ignore_ids=(bos,)).fit(train_ids)
    out = {}
    for split, s in streams.items():
        windows = s.windows(SEQ_LEN, max_windows=8 if quick else None)
        scored = s.ids[:windows.shape[0] * SEQ_LEN + 1]
        losses = {"uniform": uniform_loss(tok.vocab_size), "unigram": uni.loss(scored), "bigram": bi.loss(scored)}
        for name, model in models.items():
            losses[name] = _mean_loss(model, windows, bos)
        out[split] = {"windows": int(windows.shape[0]), "scored_targets": int((scored[1:] != bos).sum()),
                      "loss_nats": {k: round(v, 4) for k, v in losses.items()},
                      "perplexity": {k: round(math.exp(v), 2) for k, v in losses.items()},
                      "ratio_to_bigram": {k: round(math.exp(v - losses["bigram"]), 4) for k, v in losses.items()}}
        print(split, out[split]["perplexity"], flush=True)
    return out


def samples(model, tok, quick: bool) -> list:
    """The first words of one held-out document of every source, continued greedily and with top-p."""
    rows = []
    for split in ("val", "ood"):
        docs, sources = load_documents(split, corpus="v2"), document_sources(split)
        firsts = {}
        for d, src in zip(docs, sources):
            firsts.setdefault(src, d)
        for src, d in list(firsts.items())[: 2 if quick else None]:
            text = " ".join(d.split()[:12])
            ids = tok.encode(text, bos=True)
            row = {"split": split, "source": src, "prompt": text,
                   "greedy": tok.decode_continuation(generate(model, [ids], max_new_tokens=40)[0], ids),
                   "top_p": [tok.decode_continuation(generate(model, [ids], max_new_tokens=40, temperature=0.8,
                                                              top_p=0.9, seed=s)[0], ids) for s in range(2)]}
            rows.append(row)
            print(f"[{src}] {text!r} -> {row['greedy']!r}", flush=True)
    return rows


def heads(model, tok, train_ids: torch.Tensor, val_stream, quick: bool) -> dict:
    """Head scores with their controls (see the module docstring)."""
    bos, W = tok.bos_id, model.args.sliding_window
    n = 4 if quick else HEAD_TEXTS
    docs = [tok.encode(d, bos=True)[:HEAD_LEN] for d in load_documents("val", corpus="v2")]
    starts = torch.tensor([d for d in docs if len(d) == HEAD_LEN][:n])              # windows at a document's <s>
    gen = torch.Generator().manual_seed(0)
    offs = torch.randint(HEAD_LEN, len(val_stream) - HEAD_LEN, (n,), generator=gen)
    middles = val_stream.ids[offs[:, None] + torch.arange(HEAD_LEN)]                 # windows mid-document
    maps_s, maps_m = attention_maps(model, starts), attention_maps(model, middles)
    prev = previous_token_scores(maps_s)
    even_prev = float(torch.tensor([1 / min(i + 1, W or i + 1) for i in range(1, HEAD_LEN)]).mean())
    sink_s, sink_m = first_token_scores(maps_s, min_query=8), first_token_scores(maps_m, min_query=8)
    dup, dup_even = duplicate_token_scores(maps_m, middles, W)
    # induction: random sequences from the training unigram, and held-out text, each read twice;
    # controls: the same first halves followed by a different sequence (nothing to copy)
    counts = torch.bincount(train_ids, minlength=tok.vocab_size).double()
    counts[[bos, tok.eos_id]] = 0
    m = 4 if quick else REPEAT_SEQUENCES
    rand_a, rand_b = sampled_tokens(m, REPEAT_LEN, counts, gen), sampled_tokens(m, REPEAT_LEN, counts, gen)
    offs = torch.randint(0, len(val_stream) - 2 * REPEAT_LEN, (2, m), generator=gen)
    text_a, text_b = (val_stream.ids[o[:, None] + torch.arange(REPEAT_LEN)] for o in offs)
    b = torch.full((m, 1), bos)
    out = {"texts": {"n": n, "length": HEAD_LEN, "sink_min_query": 8},
           "previous_token": {"scores": [_r(r) for r in prev], "top": top_heads(prev), "even_spread": round(even_prev, 4)},
           "sink": {"from_doc_start": [_r(r) for r in sink_s], "from_mid_document": [_r(r) for r in sink_m],
                    "top_doc_start": top_heads(sink_s), "top_mid_document": top_heads(sink_m)},
           "duplicate_token": {"scores": [_r(r) for r in dup], "top": top_heads(dup), "even_spread": round(dup_even, 4)},
           "induction": {"length": REPEAT_LEN, "sequences": m}}
    for kind, first, other in (("unigram_random", rand_a, rand_b), ("heldout_text", text_a, text_b)):
        rep, ctl = torch.cat([b, first, first], 1), torch.cat([b, first, other], 1)
        ind, ind_ctl = induction_scores(attention_maps(model, rep), REPEAT_LEN), induction_scores(attention_maps(model, ctl), REPEAT_LEN)
        loss_rep, _ = per_token_losses(model, rep)
        loss_ctl, _ = per_token_losses(model, ctl)
        out["induction"][kind] = {
            "scores": [_r(r) for r in ind], "top": top_heads(ind), "top_control": top_heads(ind_ctl),
            "loss_first_half": round(float(loss_rep[:, 1:REPEAT_LEN].mean()), 4),
            "loss_second_half_repeat": round(float(loss_rep[:, REPEAT_LEN + 1:].mean()), 4),
            "loss_second_half_control": round(float(loss_ctl[:, REPEAT_LEN + 1:].mean()), 4)}
        print(kind, {k: v for k, v in out["induction"][kind].items() if k != "scores"}, flush=True)
    return out


def window_vs_full(models: dict, val_stream, bos: int, quick: bool) -> dict:
    windows = val_stream.windows(SEQ_LEN, max_windows=8 if quick else N_CONTEXT_WINDOWS)
    contexts = [c for c in CONTEXTS if c + N_CONTEXT_TARGETS - 1 <= SEQ_LEN]
    out = {"contexts": contexts, "n_targets": N_CONTEXT_TARGETS, "n_windows": int(windows.shape[0]),
           "loss_by_context": {}, "loss_by_position": {}}
    for name, model in models.items():
        if name == "v1":
            continue
        loss, keep = per_token_losses(model, windows, ignore_ids=(bos,))
        out["loss_by_position"][name] = _r((loss * keep).double().sum(0) / keep.sum(0).clamp(min=1))
        out["loss_by_context"][name] = _r(loss_by_context(model, windows, contexts, N_CONTEXT_TARGETS, ignore_ids=(bos,)))
        print(name, "loss by context:", dict(zip(contexts, out["loss_by_context"][name])), flush=True)
    return out


def int8_checks(model, val_stream, tok, quick: bool) -> dict:
    """Perplexity and top-1 agreement with int8 blocks (head in float), and with the head in int8 too."""
    windows = val_stream.windows(SEQ_LEN, max_windows=8 if quick else N_CONTEXT_WINDOWS)
    ref_loss = _mean_loss(model, windows, tok.bos_id)
    out = {"windows": int(windows.shape[0]), "perplexity_float": round(math.exp(ref_loss), 3)}
    for name, skip in (("head_float", ("output",)), ("head_int8", ())):
        q = quantize_model(copy.deepcopy(model), skip=skip)
        agree, count = 0, 0
        with torch.no_grad():
            for i in range(0, len(windows), 8):
                w = windows[i:i + 8, :-1]
                agree += int((q(w).argmax(-1) == model(w).argmax(-1)).sum())
                count += w.numel()
        out[name] = {"perplexity": round(math.exp(_mean_loss(q, windows, tok.bos_id)), 3),
                     "top1_agreement": round(agree / count, 4)}
    print("int8:", out, flush=True)
    return out


def compare(quick: bool) -> None:
    """The specimen (window 64) against its full-attention twin, trained on the same batches: every
    scored target of both held-out sets, loss by position over all of them, loss by context on windows
    spread over the whole validation split, and training loss. Writes ``english_v2_window_vs_full.json``."""
    t0 = time.perf_counter()
    tok, bos = Tokenizer.mistral_v1(), Tokenizer.mistral_v1().bos_id
    models = {name: load_model(model_dir(name)) for name in WINDOWS}        # the committed models, also --quick
    out = {"command": "python experiments/train_english_v2.py compare", "machine": machine_info(), "seq_len": SEQ_LEN,
           "windows": {n: m.args.sliding_window for n, m in models.items()}, "held_out": {}}
    for split in ("val", "ood"):
        windows = stream(split, tok).windows(SEQ_LEN, max_windows=8 if quick else None)   # (n, S + 1)
        rec = {"windows": int(windows.shape[0]), "loss_nats": {}, "loss_by_position": {}, "loss_below_window": {},
               "loss_from_window": {}}
        per_window = {}
        for name, model in models.items():
            loss, keep = per_token_losses(model, windows, ignore_ids=(bos,))      # (n, S) each
            rec["loss_nats"][name] = round(float(loss[keep].double().mean()), 4)
            rec["loss_by_position"][name] = _r((loss * keep).double().sum(0) / keep.sum(0).clamp(min=1))
            w = WINDOWS["swa"]
            rec["loss_below_window"][name] = round(float(loss[:, :w][keep[:, :w]].double().mean()), 4)
            rec["loss_from_window"][name] = round(float(loss[:, w:][keep[:, w:]].double().mean()), 4)
            per_window[name] = (loss * keep).double().sum(1) / keep.sum(1).clamp(min=1)   # (n,)
            print(split, name, rec["loss_nats"][name], flush=True)
        d = per_window["swa"] - per_window["full"]                                   # paired, window by window
        rec["scored_targets"] = int((windows[:, 1:] != bos).sum())
        rec["swa_minus_full_per_window"] = {"mean": round(float(d.mean()), 4),
                                            "standard_error": round(float(d.std() / math.sqrt(len(d))), 4),
                                            "share_where_swa_is_lower": round(float((d < 0).double().mean()), 4)}
        out["held_out"][split] = rec
    val = stream("val", tok).windows(SEQ_LEN)
    pick = torch.linspace(0, len(val) - 1, 8 if quick else N_CONTEXT_WINDOWS).round().long()
    contexts = [c for c in CONTEXTS if c + N_CONTEXT_TARGETS - 1 <= SEQ_LEN]
    out["loss_by_context"] = {"contexts": contexts, "n_targets": N_CONTEXT_TARGETS, "n_windows": len(pick),
                              "windows": "spread evenly over the validation split"}
    for name, model in models.items():
        out["loss_by_context"][name] = _r(loss_by_context(model, val[pick], contexts, N_CONTEXT_TARGETS, ignore_ids=(bos,)))
        print(name, "loss by context:", dict(zip(contexts, out["loss_by_context"][name])), flush=True)
    train_stream = stream("train", tok)
    gen = torch.Generator().manual_seed(1)                       # the same windows as analyze()
    starts = torch.randint(0, len(train_stream) - SEQ_LEN - 1, (8 if quick else TRAIN_WINDOWS,), generator=gen)
    train_windows = train_stream.ids[starts[:, None] + torch.arange(SEQ_LEN + 1)]
    out["train_loss_nats"] = {k: round(_mean_loss(m, train_windows, bos), 4) for k, m in models.items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if quick:
        print(json.dumps({k: v for k, v in out.items() if k != "held_out"})[:1500])
        print("quick run: nothing recorded")
        return
    (RESULTS / "english_v2_window_vs_full.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("recorded experiments/results/english_v2_window_vs_full.json")


def analyze(quick: bool) -> None:
    from mistral_nb.evals.language import cached_logits

    t0 = time.perf_counter()
    tok = Tokenizer.mistral_v1()
    streams = {"val": stream("val", tok), "ood": stream("ood", tok)}
    train_stream = stream("train", tok)
    models = {name: load_model(model_dir(name, quick)) for name in WINDOWS
              if (model_dir(name, quick) / "params.json").exists()}
    models["v1"] = load_model(RESULTS / "english_swa")
    swa = models["swa"]
    out = {"command": "python experiments/train_english_v2.py analyze", "machine": machine_info(), "seq_len": SEQ_LEN,
           "models": sorted(models), "n_parameters": swa.num_parameters()}
    out["held_out"] = perplexities(models, streams, train_stream.ids, tok, quick)
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, len(train_stream) - SEQ_LEN - 1, (8 if quick else TRAIN_WINDOWS,), generator=gen)
    train_windows = train_stream.ids[starts[:, None] + torch.arange(SEQ_LEN + 1)]
    out["train_loss_nats"] = {k: round(_mean_loss(m, train_windows, tok.bos_id), 4) for k, m in models.items() if k != "v1"}
    out["train_windows"] = int(train_windows.shape[0])
    out["samples"] = {"max_new_tokens": 40, "temperature": 0.8, "top_p": 0.9, "seeds": [0, 1],
                      "rows": samples(swa, tok, quick)}
    out["heads"] = heads(swa, tok, train_stream.ids, streams["val"], quick)
    out["window_vs_full"] = window_vs_full(models, streams["val"], tok.bos_id, quick)
    ids = tok.encode("The server keeps a log of every request, and", bos=True)
    prompt_len = len(ids)
    ids = ids + generate(swa, [ids], max_new_tokens=300)[0]
    seq = torch.tensor(ids)
    cached, full = cached_logits(swa, seq, prompt_len), swa(seq[None])[0, prompt_len - 1:]
    out["rolling_cache"] = {"tokens": len(ids), "cache_slots": swa.args.sliding_window,
                            "max_abs_logit_diff": float(f"{(cached - full).abs().max():.3g}"),
                            "max_logit": round(float(full.abs().max()), 2),
                            "argmax_agree": round(float((cached.argmax(-1) == full.argmax(-1)).float().mean()), 4)}
    out["int8"] = int8_checks(swa, streams["val"], tok, quick)
    out["analysis_seconds"] = round(time.perf_counter() - t0, 1)
    if quick:
        print("quick run: nothing recorded")
        return
    (RESULTS / "english_v2.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("recorded experiments/results/english_v2.json")
