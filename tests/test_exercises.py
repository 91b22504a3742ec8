"""mistral_nb.book.exercises: every stored answer is right, wrong answers are refused, nothing is revealed.

Each expected value below is recomputed from the package where it can be (the chapters' solution
cells compute them the same way), so a change in the package that changes an answer fails here.
"""

from __future__ import annotations

import math

import pytest
import torch

from mistral_nb import ModelArgs, Tokenizer, Transformer, generate
from mistral_nb.training.corpus import TokenStream, load_documents
from mistral_nb.evals.ngram import BigramLM
from mistral_nb.costs import kv_cache_bytes
from mistral_nb.book.exercises import ANSWERS, Answer, Verified, canonical, check, digest, form_of, is_correct
from mistral_nb.costs import flash_state_bytes, score_matrix_bytes
from mistral_nb.masks import attended_pairs, receptive_field
from mistral_nb.costs import parameter_counts, weights_read_per_token
from mistral_nb import parallel
from mistral_nb.book.results import load_recorded, recorded_path
from mistral_nb.costs import model_nbytes
from mistral_nb.speed.int8 import quantize_model
from mistral_nb.speed.roofline import H100_SXM_BF16, NVLINK_H100, PCIE5_X16
from mistral_nb.costs import decode_cost, prefill_cost
from mistral_nb.rope import mistral_to_hf_qk, rope_inv_freq

M7 = ModelArgs.mistral_7b()


def _int8_bytes(skip=None):
    with torch.device("meta"):
        model = Transformer(M7).to(torch.float16)
        quantize_model(model) if skip is None else quantize_model(model, skip=skip)
    return model_nbytes(model)


def _expected():
    """Exercise id -> a right answer, computed (mostly) with the package."""
    wl4 = 2 * math.pi / rope_inv_freq(128, 1e4).double()
    wl6 = 2 * math.pi / rope_inv_freq(128, 1e6).double()
    moved = mistral_to_hf_qk(torch.arange(128.0)[:, None], n_heads=1)[:, 0].long().tolist()
    rep = M7.n_heads // M7.n_kv_heads
    full_gqa = kv_cache_bytes(M7, 8192, rolling=False)
    full_mha = kv_cache_bytes(M7.replace(n_kv_heads=32), 8192, rolling=False)
    with torch.device("meta"):
        n_mha = Transformer(M7.replace(n_kv_heads=32)).num_parameters()
        n_llama2 = Transformer(M7.replace(n_kv_heads=32, hidden_dim=11008, sliding_window=None)).num_parameters()
        n7 = Transformer(M7).num_parameters()
        block = sum(p.numel() for p in Transformer(M7).layers[0].parameters())
    probs = [0.45, 0.25, 0.15, 0.08]
    int8 = _int8_bytes()
    all_int8 = _int8_bytes(skip=())
    batch = next(b for b in range(1, 4096) if decode_cost(M7, batch=b).bound(H100_SXM_BF16) == "compute")
    read = weights_read_per_token(M7)
    asked, beyond = sum(19 - p for p in range(5)), sum(max(0, 13 - p) for p in range(5))
    cp = 0x1F99C
    english = ModelArgs.from_params_json(recorded_path("experiments/results/english_v2_swa/params.json"))   # chapter 12's model

    def tied_share(args):
        counts = parameter_counts(args)
        return counts["embeddings"] / (sum(counts.values()) - counts["output head"])

    wk16 = parallel.Partition(M7, 16).slice("layers.0.attention.wk.weight", 0)
    m7_bytes = 2 * M7.n_layers * M7.dim * 2                          # (wk, wv) x layers x dim x bf16, per row
    kv_bytes = parallel.rank_kv_cache_bytes(M7, 2, seq_len=1)
    tok = Tokenizer.mistral_v1()
    train_v2 = TokenStream.from_documents(load_documents("train", corpus="v2"), tok)
    bigram = BigramLM(tok.vocab_size, ignore_ids=(tok.bos_id,)).fit(train_v2.ids)
    united, the, states = (tok.piece_to_id(p) for p in ("▁United", "▁the", "▁States"))
    return {
        "01.1": [28705] + [3 + b for b in chr(cp).encode("utf-8")],
        "02.1": (torch.tensor([3.0, 4.0]) / math.sqrt(12.5)).tolist(),
        "02.2": (65 * 4096, 2 * 65 * 4096),
        "02.3": 255.875,
        "03.1": (int((wl4 > 4096).nonzero()[0]), int((wl4 > 4096).nonzero()[-1])),
        "03.2": (10 % (2 * math.pi), (10 * 1e4 ** (-2 / 128)) % (2 * math.pi)),
        "03.3": (moved.index(7), moved[64]),
        "03.4": (round(wl6[-1].item() / 1000), int((wl6 > 4096).sum())),
        "04.1": (full_gqa / 1e9, full_mha / 1e9),
        "04.2": (rep, 13 // rep),
        "04.3": n_mha,
        "05.1": (101, 4096, 10_000 - 4096 + 1),
        "05.2": attended_pairs(32_768, 4096) / attended_pairs(32_768),
        "05.3": math.ceil(100_000 / 4095),
        "05.4": 5 + 1,
        "06.1": (10_000 % 4096, 10_000 - 4096),
        "06.2": (kv_cache_bytes(M7, 100_000), kv_cache_bytes(M7, 100_000, rolling=False)),
        "06.3": (math.ceil(10_000 / 4096), 10_000 - 2 * 4096, 4096 + 10_000 - 2 * 4096),
        "07.1": n_llama2,
        "07.2": (2 * block, 100 * 32 * block / n7),
        "07.3": (8 / 3 * 4096, 256 * math.ceil(8 / 3 * 4096 / 256)),
        "08.1": ([0, 1, 2, 3], [p / 0.93 for p in probs]),
        "08.2": 2 / math.log(9),
        "08.3": 3 + 9,
        "08.4": int((15e9 - int8) // kv_cache_bytes(M7, 4096)),
        "09.1": 65536 ** 2 / attended_pairs(65536, 4096),
        "09.2": batch,
        "09.3": (round(1e12 / read), round(2e12 / read)),
        "09.4": (score_matrix_bytes(1, 32, 65536, bytes_per_value=2),
                 flash_state_bytes(1, 32, 65536, 128, 128, bytes_per_value=2)),
        "09.5": tuple(prefill_cost(M7, 4096, chunk=c).seconds(H100_SXM_BF16) for c in (1, 4096)),
        "10.1": (all_int8, int8 - all_int8),
        "10.2": (64, 1.0),
        "10.3": (torch.bfloat16, None, torch.bfloat16, "int8"),
        "11.1": (receptive_field(32, 4096), 32 * 4096),
        "11.2": math.ceil(19 / 3),
        "11.3": beyond / asked * math.log(16),
        "11.4": (receptive_field(1, 8), receptive_field(2, 4)),
        "12.1": (receptive_field(english.n_layers, 32), 512 - receptive_field(english.n_layers, 32) - 1),
        "12.2": (math.log(2),
                 load_recorded("experiments/results/english_v2.json")["held_out"]["val"]["loss_nats"]["bigram"] - math.log(4)),
        "12.3": (tied_share(english), tied_share(M7)),
        "12.4": (float(bigram.probs(united)[states]), float(bigram.probs(the)[states])),
        "12.5": _miniature_losses(tok, (8, 32), train_v2),
        "13.1": ((wk16[2] - wk16[1]) * m7_bytes, M7.n_kv_heads * M7.head_dim // 16 * m7_bytes),
        "13.2": ([r for r in range(4) if parallel.Partition(ModelArgs.tiny(), 4).kv_group(r) == 0],
                 parallel.Partition(ModelArgs.tiny(), 4).local_args().n_kv_heads),
        "13.3": tuple(_first_pass_where_all_reduce_is_slower(link) for link in (NVLINK_H100, PCIE5_X16)),
        "13.4": (int(20e9 // (math.ceil(500 / 16) * 16 * kv_bytes)), int(20e9 // (M7.sliding_window * kv_bytes))),
        "13.5": _ranks_agree_when_sampling(),
        **_chapter_14(),
        **_chapter_15(),
    }


def _chapter_14():
    """14.1-14.4: pass@k, acc normalised per token on 40 live items, items for +-1 point, a request's ids."""
    from mistral_nb import load_model
    from mistral_nb.book.results import recorded_checkpoint
    from mistral_nb.evals.harness import evaluate, read_book_task
    from mistral_nb.evals.metrics import Z95, pass_at_k
    from mistral_nb.evals.scoring import Scorer, encode_pair

    tok = Tokenizer.mistral_v1()
    task = read_book_task("mnb_next_sentence")
    live = evaluate(Scorer(load_model(recorded_checkpoint("experiments/results/english_v2_swa")), tok, max_length=512),
                    task, num_fewshot=0, limit=40)

    def per_token_pick(doc, lls):
        per = [ll / len(encode_pair(tok, doc["context"], " " + c)[1]) for ll, c in zip(lls, doc["choices"])]
        return max(range(len(per)), key=lambda j: (per[j], -j))

    return {"14.1": (pass_at_k(20, 4, 1), pass_at_k(20, 4, 10)),
            "14.2": sum(per_token_pick(d, ll) == d["label"] for d, ll in zip(task.docs, live["lls"])) / 40,
            "14.3": math.ceil((Z95 * 0.5 / 0.01) ** 2),
            "14.4": encode_pair(tok, "It is 10 ", "0 km")[1]}


def _chapter_15():
    """15.1-15.4: LoRA's count, a DPO loss, packing at 64 positions, activations of the 7B."""
    from mistral_nb.costs import activation_bytes, lora_parameter_count, parameter_count
    from mistral_nb.training.dpo import dpo_loss
    from mistral_nb.training.instructions import conversation, make_instructions
    from mistral_nb.training.sft import encode_example, pack_groups

    t = torch.tensor
    n16 = lora_parameter_count(M7, 16, ("wq", "wk", "wv", "wo"))
    held = make_instructions(load_documents("val", corpus="v2"), per_task=8, seed=1)
    tok = Tokenizer.mistral_v1()
    short = [e for e in (encode_example(tok, conversation(i)) for i in held) if len(e) - 1 <= 64]
    return {"15.1": (n16, n16 / parameter_count(M7)),
            "15.2": (dpo_loss(t([-12.0]), t([-15.0]), t([-13.0]), t([-14.0]), 0.1)[0].item(), math.log(2)),
            "15.3": (len(short), len(pack_groups(short, 64))),
            "15.4": tuple(activation_bytes(M7, 2, 1024, checkpointing=c, quantize="int8") / 1e9 for c in (True, False))}


def _first_pass_where_all_reduce_is_slower(link, world=8):
    """13.3: the fewest tokens per pass at which a rank's all-reduces outlast its computation."""
    def slower(t):
        times = parallel.rank_pass_seconds(M7, world, t, H100_SXM_BF16, link.bandwidth)
        return times["all-reduce"] > times["compute"]
    return next(t for t in range(1, 100_000) if slower(t))


def _sample_on_ranks(comm, args, seed_per_rank):
    tp = parallel.shard_model(parallel.random_model(args, 0), comm)
    return generate(tp, [[1, 5, 9]], max_new_tokens=16, temperature=1.0, seed=7 + comm.rank * seed_per_rank)[0]


def _ranks_agree_when_sampling():
    """13.5: positions where 2 thread ranks sample the same token, with one seed and with one per rank."""
    agree = []
    for per_rank in (False, True):
        (a, b), _ = parallel.launch(_sample_on_ranks, 2, (ModelArgs.tiny(), per_rank), {}, mode="threads")
        agree.append(sum(x == y for x, y in zip(a, b)))
    return tuple(agree)


def _miniature_losses(tok, windows, train_stream):
    """Chapter 12's live miniature, trained as the chapter trains it (corpus v2), once per window: held-out losses."""
    from mistral_nb.evals.language import mean_loss
    from mistral_nb.training.loop import seeded_model, train

    torch.set_num_threads(1)
    val_small = TokenStream.from_documents(load_documents("val", corpus="v2"), tok).windows(64)[::176][:64]
    out = []
    for w in windows:
        args = ModelArgs(dim=64, n_layers=2, head_dim=16, hidden_dim=224, n_heads=4, n_kv_heads=2,
                         vocab_size=32000, sliding_window=w)
        h = train(seeded_model(args, seed=0), train_stream.batches(8, 64), steps=100, lr=1e-2, warmup=10,
                  weight_decay=0.1, seed=0, eval_fn=lambda m: mean_loss(m, val_small, ignore_ids=(tok.bos_id,)),
                  eval_every=100, progress=False)
        out.append(h.val_loss[-1])
    return tuple(out)


EXPECTED = _expected()


def test_every_exercise_has_an_answer_and_a_form():
    assert sorted(EXPECTED) == sorted(k for k, v in ANSWERS.items() if isinstance(v, Answer))
    for key, spec in ANSWERS.items():
        assert spec.form and form_of(key) == spec.form


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_right_answer_is_accepted(key):
    assert is_correct(key, EXPECTED[key]), f"{key}: the computed answer {EXPECTED[key]!r} is refused"


def _perturbed(value):
    """A wrong answer of the same shape: the first number changed by a lot."""
    if isinstance(value, torch.dtype) or isinstance(value, str) or value is None:
        return "wrong"
    if isinstance(value, (list, tuple)):
        out = list(value)
        out[0] = _perturbed(out[0])
        return out
    return value * 1.5 + 3


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_wrong_answer_is_refused(key):
    assert not is_correct(key, _perturbed(EXPECTED[key]))


def test_answers_are_not_stored_in_clear():
    for key, spec in ANSWERS.items():
        if isinstance(spec, Answer):
            assert len(spec.digest) == 64 and str(canonical(EXPECTED[key], spec.decimals)) not in spec.form


def test_digest_is_salted_by_exercise():
    assert digest("05.3", 25) != digest("11.2", 25)


def test_tolerance_of_one_unit_in_the_last_decimal():
    assert is_correct("05.2", 0.234375)          # 0.2344 to 4 decimals
    assert is_correct("05.2", 0.23442)
    assert not is_correct("05.2", 0.2347)
    assert not is_correct("05.3", 25.4)          # integers are exact
    assert is_correct("05.3", 25.0) and is_correct("05.3", torch.tensor(25))


def test_messages(capsys):
    check("05.1", None)
    check("05.1", (101, 4096, 5905))
    check("05.1", 7)
    check("05.1", (1, 2, 3))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("05.1: no answer yet. Expected a triple")
    assert out[1] == "05.1: ✓ correct"
    assert out[2].startswith("05.1: ✗ expected a triple")
    assert out[3] == "05.1: ✗ not yet."
    with pytest.raises(KeyError, match="no exercise"):
        check("99.9", 1)


def test_shape_does_not_reveal_which_entry_is_none():
    assert ANSWERS["10.3"].signature == "[s,s,s,s]"


def test_verified_exercises():
    from mistral_nb import Tokenizer

    tok = Tokenizer.mistral_v1()
    assert all(isinstance(ANSWERS[k], Verified) for k in ("01.2", "01.3", "01.4"))

    def stream_decode(tok, ids):
        shown, pending = "", []
        for i in ids:
            pending.append(i)
            text = tok.decode(pending)
            if text.endswith("\ufffd") or text == shown:
                continue
            yield text[len(shown):]
            shown = text

    def byte_by_byte(tok, ids):                      # wrong: yields broken characters
        for i in ids:
            yield tok.decode([i])

    assert is_correct("01.2", stream_decode) and not is_correct("01.2", byte_by_byte)
    three = [tok.bos_id] + tok.encode("[INST] Hi [/INST]", bos=False) + tok.encode("Hello!", bos=False, eos=True) \
        + tok.encode("[INST] Bye [/INST]", bos=False)
    assert is_correct("01.3", three) and not is_correct("01.3", three[:-1])
    assert is_correct("01.4", (["▁Hello", "▁", "▁world"], ["▁a", "▁" * 7, "▁b"]))
    assert not is_correct("01.4", (["▁Hello", "▁▁", "world"], ["▁a", "▁" * 8, "b"]))
    assert not is_correct("01.2", 42)                # not callable: refused, not raised
