"""Corpus v2 and the probes of the specimen's analysis: sources per document, unigram-sampled sequences,
duplicate-token scores."""

import pytest
import torch

from mistral_nb import Tokenizer
from mistral_nb.book.results import load_recorded, recorded_path
from mistral_nb.evals.heads import duplicate_token_scores, sampled_tokens
from mistral_nb.training.corpus import document_sources, load_documents


def test_corpus_v2_splits_sources_and_manifest_agree():
    import hashlib
    import lzma

    manifest = load_recorded("experiments/corpus_v2/manifest.json")
    docs = {s: load_documents(s, corpus="v2") for s in ("train", "val", "ood")}
    for split, d in docs.items():
        text = lzma.decompress(recorded_path(f"experiments/corpus_v2/{split}.txt.xz").read_bytes()).decode()
        assert hashlib.sha256(text.encode()).hexdigest() == manifest[f"{split}_sha256"]
        sources = document_sources(split)
        assert len(sources) == len(d) == manifest[f"{split}_documents"]
    assert not set(docs["train"]) & (set(docs["val"]) | set(docs["ood"]))
    train_sources = set(document_sources("train"))
    assert len(train_sources) >= 6 and not train_sources & set(document_sources("ood"))   # ood: other sources
    shares = [s["share_of_train_tokens"] for s in manifest["sources"].values() if s["documents"]["train"]]
    assert max(shares) <= 0.30 and abs(sum(shares) - 1) < 0.01
    assert manifest["train_utf8_bytes"] + manifest["val_utf8_bytes"] >= 30_000_000
    assert document_sources("val")[0] == "sotu" and docs["val"][0].startswith("During the past year")
    with pytest.raises(ValueError, match="has the splits"):
        load_documents("ood", corpus="v1")
    with pytest.raises(ValueError, match="corpus must be one of"):
        load_documents("val", corpus="v3")


def test_sampled_tokens_follow_the_given_distribution():
    probs = torch.zeros(10)
    probs[[3, 7]] = torch.tensor([1.0, 3.0])
    ids = sampled_tokens(50, 40, probs, torch.Generator().manual_seed(0))
    assert ids.shape == (50, 40) and set(ids.unique().tolist()) == {3, 7}
    assert 0.70 < float((ids == 7).float().mean()) < 0.80
    with pytest.raises(ValueError, match="non-negative"):
        sampled_tokens(2, 2, torch.tensor([1.0, -1.0]))


def test_duplicate_token_scores_on_hand_made_maps():
    tokens = torch.tensor([[5, 6, 5, 7, 6, 5]])
    S = tokens.shape[1]
    maps = torch.zeros(1, 1, 2, S, S)
    for i in range(S):
        maps[0, 0, 1, i, : i + 1] = 1.0 / (i + 1)                   # head 1: even spread
        earlier = [j for j in range(i) if tokens[0, j] == tokens[0, i]]
        maps[0, 0, 0, i, earlier[-1] if earlier else i] = 1.0      # head 0: the last earlier copy
    score, even = duplicate_token_scores(maps, tokens)
    assert score[0, 0].item() == pytest.approx(1.0)
    # queries with an earlier copy: 2 (1 of 3 keys), 4 (1 of 5), 5 (2 of 6)
    assert even == pytest.approx((1 / 3 + 1 / 5 + 2 / 6) / 3) and score[0, 1].item() == pytest.approx(even)
    win, _ = duplicate_token_scores(maps, tokens, window=3)        # with W = 3 only query 2 sees a copy
    assert win[0, 0].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no query has an earlier copy"):
        duplicate_token_scores(maps[..., :2, :2], tokens[:, :2])


def test_held_out_prompts_decode_as_they_continue():
    tok = Tokenizer.mistral_v1()
    ids = tok.encode("The server keeps a log of every request, and", bos=True)
    new = tok.encode(" each line", bos=False)
    assert tok.decode(ids) + tok.decode_continuation(new, ids) == tok.decode(ids + new)
