"""Chapter 12's machinery: the next-token objective, perplexity, checkpoint/resume, the corpus and
token stream, the n-gram baselines, evaluation by position and context, head scores, and the model
trained on English (parity with transformers, cache, load)."""

import math

import pytest
import torch

from helpers import rel_err
from mistral_nb import ModelArgs, load_model
from mistral_nb.training.corpus import TokenStream, load_documents
from mistral_nb.evals.language import (cached_logits, loss_by_context, loss_by_position, mean_loss, per_token_losses,
                                       repeats_a_phrase)
from mistral_nb.evals.heads import (attention_by_distance, first_token_scores, induction_scores,
                                    previous_token_scores, repeated_random_tokens, top_heads)
from mistral_nb.evals.ngram import BigramLM, UnigramLM, uniform_loss
from mistral_nb.book.results import load_recorded, recorded_checkpoint, recorded_path, repository_root
from mistral_nb.evals.heads import attention_maps
from mistral_nb.training.loop import (IGNORE, load_training_state, next_token_loss, perplexity, seeded_model,
                                      shift_targets, train)

V = 50


def args(**kw):
    base = dict(dim=32, n_layers=2, head_dim=8, hidden_dim=64, n_heads=4, n_kv_heads=2, vocab_size=V, sliding_window=6)
    base.update(kw)
    return ModelArgs(**base)


pytestmark = pytest.mark.usefixtures("one_thread")


def stream(n=4000, seed=0):
    """A stream with structure: a repeating pattern of 7 ids plus noise, documents framed by 1 ... 2."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.tensor([5, 9, 14, 20, 27, 33, 41])
    ids = pattern.repeat(n // 7 + 1)[:n].clone()
    noise = torch.rand(n, generator=g) < 0.1
    ids[noise] = torch.randint(3, V, (int(noise.sum()),), generator=g)
    ids[::100] = 1
    ids[99::100] = 2
    return TokenStream(ids, bos=1, eos=2)


# ------------------------------------------------------------------ the objective
def test_shift_pairs_each_input_with_the_next_token():
    w = torch.tensor([[1, 7, 8, 9], [3, 4, 1, 6]])
    x, y = shift_targets(w, ignore_ids=(1,))
    assert x.tolist() == [[1, 7, 8], [3, 4, 1]]
    assert y.tolist() == [[7, 8, 9], [4, IGNORE, 6]]          # <s> is never a target
    with pytest.raises(ValueError, match="window"):
        shift_targets(torch.tensor([[1]]))


def test_next_token_loss_is_cross_entropy_of_the_shifted_targets():
    model = seeded_model(args(), 0).eval()
    w = torch.randint(3, V, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(w[:, :-1])
    manual = -torch.log_softmax(logits, -1).gather(-1, w[:, 1:, None]).squeeze(-1)   # nats, (2, 8)
    with torch.no_grad():
        assert torch.allclose(next_token_loss(model, w), manual.mean(), atol=1e-6)
        assert torch.allclose(next_token_loss(model, w, reduction="none"), manual, atol=1e-6)
    # an unshifted loss (predicting the input itself) is a different number
    unshifted = torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, :-1].flatten())
    assert abs(float(unshifted) - float(manual.mean())) > 1e-3


def test_untrained_loss_is_near_ln_vocab_and_perplexity_is_its_exponential():
    model = seeded_model(args(vocab_size=32000, dim=32), 0).eval()
    w = torch.randint(0, 32000, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = float(next_token_loss(model, w))
    assert abs(loss - math.log(32000)) < 1.0
    assert perplexity(math.log(32000)) == pytest.approx(32000)
    assert uniform_loss(32000) == pytest.approx(10.3735, abs=1e-4)


# ------------------------------------------------------------------ training, checkpoint, resume
def _run(tmp_path, steps, stop_after=None, resume=False, eval_every=0, name="ck.pt"):
    s = stream()
    model = seeded_model(args(), 3)
    val = stream(seed=9).windows(16, max_windows=4)
    h = train(model, s.batches(4, 16), steps, lr=3e-3, warmup=2, seed=7, progress=False,
              checkpoint=tmp_path / name, checkpoint_every=2, resume=resume, stop_after=stop_after,
              eval_fn=(lambda m: mean_loss(m, val, ignore_ids=(1,))) if eval_every else None, eval_every=eval_every)
    return model, h


def test_training_on_a_stream_learns_and_records_tokens_and_validation(tmp_path):
    model, h = _run(tmp_path, 40, eval_every=10)
    assert h.tokens == [4 * 16 * (i + 1) for i in range(40)]
    assert h.val_step == [10, 20, 30, 40] and len(h.val_loss) == 4
    assert h.val_loss[-1] < h.val_loss[0] - 0.5                  # it learned the pattern
    assert len(h.seconds) == 40 and h.seconds == sorted(h.seconds)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    full_model, full = _run(tmp_path, 8, name="a.pt")
    _, first = _run(tmp_path, 8, stop_after=5, resume=True, name="b.pt")     # interrupted after step 5
    assert len(first.loss) == 5
    state = load_training_state(tmp_path / "b.pt")
    assert state["step"] == 5
    resumed_model, resumed = _run(tmp_path, 8, resume=True, name="b.pt")     # started again
    assert resumed.loss == full.loss and resumed.lr == full.lr
    assert resumed.tokens == full.tokens
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings_and_non_checkpoints(tmp_path):
    _run(tmp_path, 4, stop_after=2, resume=True, name="c.pt")
    s = stream()
    with pytest.raises(ValueError, match="other settings"):
        train(seeded_model(args(), 3), s.batches(4, 16), 4, lr=1e-3, warmup=2, seed=7, progress=False,
              checkpoint=tmp_path / "c.pt", resume=True)
    with pytest.raises(ValueError, match="configuration"):
        train(seeded_model(args(dim=64, head_dim=16), 3), s.batches(4, 16), 4, lr=3e-3, warmup=2, seed=7,
              progress=False, checkpoint=tmp_path / "c.pt", resume=True)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_training_state(bad)
    with pytest.raises(ValueError, match="resume"):
        train(seeded_model(args(), 3), s.batches(4, 16), 4, warmup=1, progress=False, resume=True)


# ------------------------------------------------------------------ token stream and corpus
def test_stream_windows_cover_every_target_once():
    s = TokenStream(torch.arange(3, 3 + 41), bos=1, eos=2)
    w = s.windows(8)
    assert w.shape == (5, 9)
    targets = w[:, 1:].flatten().tolist()
    assert targets == list(range(4, 44))                         # every id after the first, once
    x, y = s.batches(3, 8)(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 8) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="fewer than one window"):
        TokenStream(torch.arange(5)).windows(8)


def test_corpus_is_english_split_by_document_and_tokenized_with_bos_eos():
    from mistral_nb import Tokenizer

    train_docs, val_docs = load_documents("train"), load_documents("val")
    manifest = load_recorded("experiments/corpus/manifest.json")
    for split, docs in (("train", train_docs), ("val", val_docs)):
        assert len(docs) == sum(src["documents"][split] for src in manifest["sources"].values())
    assert len(train_docs) > 300 and len(val_docs) > 30
    assert not set(train_docs) & set(val_docs)                    # no validation document is trained on
    assert sum(map(len, train_docs)) > 5_000_000                  # several MB of text
    assert all("\x1e" not in d for d in val_docs)
    tok = Tokenizer.mistral_v1()
    s = TokenStream.from_documents(val_docs[:2], tok)
    ids = s.ids.tolist()
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 2 and ids.count(tok.eos_id) == 2
    assert tok.decode(ids[1:ids.index(tok.eos_id)]) == val_docs[0]
    with pytest.raises(ValueError, match="split"):
        load_documents("test")


def test_corpus_manifest_matches_the_shipped_files():
    import hashlib
    import json
    import lzma

    root = repository_root()
    manifest = json.loads((root / "experiments/corpus/manifest.json").read_text())
    for split in ("train", "val"):
        text = lzma.decompress(recorded_path(f"experiments/corpus/{split}.txt.xz").read_bytes()).decode()
        assert hashlib.sha256(text.encode()).hexdigest() == manifest[f"{split}_sha256"]
    assert set(manifest["sources"]) == {"sotu", "python-docs", "rust-docs"}


# ------------------------------------------------------------------ baselines
def test_ngram_distributions_sum_to_one_and_bigram_beats_unigram():
    train_s, val_s = stream(seed=0), stream(seed=1)
    uni = UnigramLM(V, ignore_ids=(1,)).fit(train_s.ids)
    bi = BigramLM(V, ignore_ids=(1,)).fit(train_s.ids)
    assert float(uni.probs().sum()) == pytest.approx(1.0, abs=1e-12)
    for prev in (0, 5, 9, 49):                                      # seen and unseen contexts
        p = bi.probs(prev)
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-12) and float(p.min()) > 0
    assert bi.loss(val_s.ids) < uni.loss(val_s.ids) < uniform_loss(V)
    # add-one unigram by hand
    counts = torch.bincount(train_s.ids[1:][train_s.ids[1:] != 1], minlength=V).double()
    assert torch.allclose(uni.probs(), (counts + 1) / (counts.sum() + V))


def test_bigram_kneser_ney_by_hand():
    ids = torch.tensor([3, 4, 3, 4, 3, 5, 6])                 # pairs: 34 x2, 43 x2, 35, 56
    bi = BigramLM(8, discount=0.5).fit(ids)
    # continuation: n(.b): 4 <- {3}, 3 <- {4}, 5 <- {3}, 6 <- {5}: 4 distinct pairs, 4 seen types
    p_cont4 = (1 - 0.5) / 4 + 0.5 * 4 / 4 / 8
    # context 3: c(3) = 3, followers {4, 5}: p(4|3) = (2 - .5)/3 + .5 * 2/3 * p_cont(4)
    assert float(bi.probs(3)[4]) == pytest.approx((2 - 0.5) / 3 + 0.5 * 2 / 3 * p_cont4)
    assert float(bi.probs(7)[4]) == pytest.approx(p_cont4)        # unseen context: continuation only


# ------------------------------------------------------------------ evaluation
def test_loss_by_position_and_context_agree_with_mean_loss():
    model = seeded_model(args(), 0)
    s = stream()
    train(model, s.batches(8, 16), 30, lr=3e-3, warmup=3, progress=False)
    w = stream(seed=5).windows(24, max_windows=6)
    by_pos = loss_by_position(model, w, ignore_ids=(1,))
    loss, keep = per_token_losses(model, w, ignore_ids=(1,))
    assert by_pos.shape == (24,)
    assert float((by_pos * keep.sum(0)).sum() / keep.sum()) == pytest.approx(mean_loss(model, w, ignore_ids=(1,)), rel=1e-6)
    ctx = loss_by_context(model, w, [23 - 4 + 1], n_targets=4, ignore_ids=(1,))   # the full window: same as mean of last 4
    assert ctx[0] == pytest.approx(float(loss[:, -4:][keep[:, -4:]].double().mean()), rel=1e-5)
    short = loss_by_context(model, w, [1, 8], n_targets=4, ignore_ids=(1,))
    assert short[0] > short[1]                                    # more context helps on a pattern
    with pytest.raises(ValueError, match="does not fit"):
        loss_by_context(model, w, [30], n_targets=4)


def test_cached_logits_equal_the_full_forward_far_past_the_window():
    model = seeded_model(args(sliding_window=4), 0).eval()
    ids = torch.randint(3, V, (30,), generator=torch.Generator().manual_seed(2))
    cached = cached_logits(model, ids, prompt_len=9)
    full = model(ids[None])[0, 8:]
    assert cached.shape == full.shape == (22, V)
    assert rel_err(cached, full) < 1e-5


def test_repeats_a_phrase_finds_a_decoding_loop():
    assert repeats_a_phrase("the following example shows the following example shows it.")
    assert not repeats_a_phrase("The following example shows how the following code runs.")   # only two words repeat
    assert repeats_a_phrase("the following example", n_words=1) is False
    assert repeats_a_phrase("a b a", n_words=1) and not repeats_a_phrase("a b a", n_words=2)
    assert repeats_a_phrase("one  two\nthree one two\tthree", n_words=3)                   # any whitespace
    assert not repeats_a_phrase("") and not repeats_a_phrase("too short", n_words=4)
    with pytest.raises(TypeError, match="must be a str"):
        repeats_a_phrase(["a", "b"])
    with pytest.raises(ValueError, match="n_words"):
        repeats_a_phrase("a b", n_words=0)


# ------------------------------------------------------------------ head scores
def test_head_scores_on_hand_made_maps():
    L, B, H, S = 2, 1, 3, 8
    maps = torch.zeros(L, B, H, S, S)
    maps[..., 0, 0] = 1
    for i in range(1, S):
        maps[0, :, 0, i, i - 1] = 1.0                              # layer 0 head 0: previous token
        maps[0, :, 1, i, 0] = 1.0                                  # layer 0 head 1: <s>
        maps[0, :, 2, i, i] = 1.0                                  # layer 0 head 2: itself
        maps[1, :, :, i, : i + 1] = 1.0 / (i + 1)                  # layer 1: uniform
    prev, first = previous_token_scores(maps), first_token_scores(maps, min_query=2)
    assert prev[0].tolist() == pytest.approx([1.0, 1 / 7, 0.0])   # query 1's <s> is also its previous token
    assert first[0].tolist() == [0.0, 1.0, 0.0]
    assert first_token_scores(maps)[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])   # from query 1 on
    assert top_heads(prev, 1) == [(0, 0, 1.0)]
    dist = attention_by_distance(maps, max_distance=3, min_query=3)
    assert dist.shape == (L, H, 4)
    assert dist[0, 0].tolist() == [0, 1, 0, 0] and dist[0, 2].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="L, B, H, S, S"):
        previous_token_scores(maps[0])


def test_induction_score_finds_a_head_that_looks_at_the_token_after_the_earlier_copy():
    n = 5
    rep = repeated_random_tokens(2, n, 3, V, bos=1, generator=torch.Generator().manual_seed(0))
    assert rep.shape == (2, 1 + 2 * n) and torch.equal(rep[:, 1:1 + n], rep[:, 1 + n:]) and (rep[:, 0] == 1).all()
    S = rep.shape[1]
    maps = torch.zeros(1, 2, 2, S, S)
    maps[..., 0] = 1.0
    for p in range(1 + n, S):
        maps[0, :, 0, p] = 0
        maps[0, :, 0, p, p - n + 1] = 1.0                          # head 0: induction
    scores = induction_scores(maps, n)
    assert scores[0].tolist() == [1.0, 0.0]


# ------------------------------------------------------------------ the recorded model trained on English
def _trained_path():
    return recorded_checkpoint("experiments/results/english_swa")


@pytest.mark.parametrize("name,corpus,window", [("english_swa", "v1", 64), ("english_v2_swa", "v2", 64),
                                                ("english_v2_full", "v2", None)])
def test_trained_model_loads_in_mistral_layout_and_matches_transformers(tmp_path, name, corpus, window):
    from transformers import MistralForCausalLM

    from mistral_nb import Tokenizer, save_checkpoint

    path = recorded_checkpoint(f"experiments/results/{name}")
    assert (path / "params.json").is_file()
    model = load_model(path)
    a = model.args
    assert (a.n_heads, a.n_kv_heads, a.vocab_size, a.sliding_window) == (8, 2, 32000, window)
    save_checkpoint(model, tmp_path / "hf", layout="hf")
    hf = MistralForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    tok = Tokenizer.mistral_v1()
    text = load_documents("val", corpus=corpus)[3]
    ids = torch.tensor([tok.encode(text, bos=True)[:3 * 64 + 5]])   # across a window of 64, 3 times
    with torch.no_grad():
        ours, ref = model(ids), hf(ids).logits.float()
    assert rel_err(ours, ref) < 1e-4
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_trained_model_is_better_than_the_bigram_on_held_out_text():
    from mistral_nb import Tokenizer

    tok = Tokenizer.mistral_v1()
    model = load_model(_trained_path())
    val = TokenStream.from_documents(load_documents("val")[:2], tok).windows(256, max_windows=4)
    loss = mean_loss(model, val, ignore_ids=(tok.bos_id,))
    assert loss < 5.0                                            # ~ perplexity 148 (uniform: 32,000)
