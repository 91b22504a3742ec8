"""Benchmark scoring (mistral_nb.evals.scoring, generation, fewshot, metrics, harness, baselines,
public_tasks) on hand-checkable cases, without lm-eval: its equality with lm-eval is
tests/test_evals_lm_eval.py."""

import itertools
import math
import random
import subprocess
import sys
from math import comb

import pytest
import torch

from mistral_nb import ModelArgs, Tokenizer
from mistral_nb.evals import metrics as M
from mistral_nb.evals.baselines import NgramScorer
from mistral_nb.evals.fewshot import FewshotSampler, fewshot_context, fewshot_contexts
from mistral_nb.evals.generation import (STOP_CHECK_EVERY, _generate_batch, cut_at_stop, extract_answer,
                                         generate_until, normalize_gen_kwargs)
from mistral_nb.evals.harness import Task, evaluate, read_task
from mistral_nb.evals.ngram import BigramLM, UnigramLM
from mistral_nb.evals.public_tasks import hellaswag_preprocess, items_of, paper_comparison, score_dataset
from mistral_nb.evals.scoring import (Scorer, encode, encode_pair, loglikelihood, loglikelihood_rolling,
                                      rolling_windows, score_tokens)
from mistral_nb.book.results import recorded_path
from mistral_nb.training.loop import seeded_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.mistral_v1()


@pytest.fixture(scope="module")
def model():
    """A random model over Mistral's 32,000 ids (window 8, so windows and truncation matter)."""
    return seeded_model(ModelArgs.tiny(vocab_size=32000), seed=0).eval()


def direct_logprob(model, ctx, cont):
    """log p(cont | ctx) and greedy-ness computed the plain way: one sequence, no batching."""
    ids = torch.tensor([list(ctx) + list(cont)])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids[:, :-1]).float(), -1)[0]
    rows = lp[len(ctx) - 1:]
    target = torch.tensor(cont)
    return float(rows.gather(-1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all())


# ------------------------------------------------------------------ tokenization of a request
def test_trailing_space_of_the_context_moves_to_the_continuation(tok):
    ctx, cont = encode_pair(tok, "The cat ", "sat")
    assert ctx == tok.encode("The cat", bos=True)
    assert cont == tok.encode("The cat sat", bos=True)[len(ctx):] == [tok.piece_to_id("▁sat")]
    assert encode_pair(tok, "The cat", " sat") == (ctx, cont)            # the same request, written two ways


def test_pair_is_encoded_whole_and_split_at_the_context_length(tok):
    # "10" + "0 km" is one text "100 km": the split follows the whole text's tokens, not the pieces'
    ctx, cont = encode_pair(tok, "It is 10", "0 km")
    whole = tok.encode("It is 100 km", bos=True)
    assert ctx == tok.encode("It is 10", bos=True) and cont == whole[len(ctx):]
    assert ctx + cont == whole


def test_empty_context_is_the_bos_token_and_bos_text_is_not_doubled(tok):
    assert encode_pair(tok, "", "Hello world") == ([tok.bos_id], tok.encode("Hello world", bos=False))
    assert encode(tok, "Hello") == [tok.bos_id] + tok.encode("Hello", bos=False)
    assert encode(tok, "<s>Hello")[0] != tok.bos_id                    # text that starts with "<s>": no second <s>
    with pytest.raises(ValueError, match="continuation .* is empty"):
        encode_pair(tok, "x", "")
    with pytest.raises(TypeError, match="context must be a str"):
        encode_pair(tok, None, "x")


def test_rolling_windows_are_lm_evals_example():
    # lm_eval.api.model.LM.loglikelihood_rolling's docstring: tokens 0..9, max length 4, prefix BOS
    w = rolling_windows(list(range(10)), prefix_token=-1, max_length=4)
    inputs = [(ctx + cont)[-5:][:-1] for ctx, cont in w]
    assert inputs == [[-1, 0, 1, 2], [3, 4, 5, 6], [5, 6, 7, 8]]
    assert [cont for _, cont in w] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("n,L", [(1, 4), (4, 4), (5, 4), (37, 8), (64, 16)])
def test_rolling_windows_predict_every_token_once_with_full_inputs(n, L):
    tokens = list(range(100, 100 + n))
    w = rolling_windows(tokens, prefix_token=1, max_length=L)
    assert sum((cont for _, cont in w), []) == tokens
    for i, (ctx, cont) in enumerate(w):
        assert len(cont) <= L and (ctx + cont)[len(ctx):] == cont
        if i:                                           # later windows: a full input of L tokens
            assert len(ctx) + len(cont) == L + 1 and ctx == tokens[tokens.index(cont[0]) - len(ctx):tokens.index(cont[0])]
    assert rolling_windows([], 1, 4) == []


# ------------------------------------------------------------------ scoring
def test_scores_equal_the_plain_computation_in_any_batch_and_order(model, tok):
    g = torch.Generator().manual_seed(0)
    reqs = [(torch.randint(3, 32000, (int(a),), generator=g).tolist(), torch.randint(3, 32000, (int(b),), generator=g).tolist())
            for a, b in torch.randint(1, 12, (9, 2), generator=g)]
    expected = [direct_logprob(model, c, x) for c, x in reqs]
    for bs in (1, 3, 16):
        got = score_tokens(model, reqs, batch_size=bs)
        assert [g_[1] for g_ in got] == [e[1] for e in expected]
        assert max(abs(g_[0] - e[0]) for g_, e in zip(got, expected)) < 1e-4
    class Plain(torch.nn.Module):                       # no norm/output to hook: the full logits are computed
        def forward(self, tokens):
            return model(tokens)

    plain = score_tokens(Plain(), reqs, batch_size=4)
    assert max(abs(p[0] - e[0]) for p, e in zip(plain, expected)) < 1e-4 and [p[1] for p in plain] == [e[1] for e in expected]
    perm = list(range(9))
    random.Random(1).shuffle(perm)
    shuffled = score_tokens(model, [reqs[i] for i in perm], batch_size=4)
    assert max(abs(shuffled[j][0] - expected[i][0]) for j, i in enumerate(perm)) < 1e-4


def test_greedy_flag_is_true_exactly_for_the_greedy_continuation(model):
    ctx = [1, 500, 600, 700]
    greedy = []
    for _ in range(3):                                  # the greedy continuation, one token at a time
        with torch.no_grad():
            greedy.append(int(model(torch.tensor([ctx + greedy]))[0, -1].argmax()))
    (ll, is_greedy), (_, other) = score_tokens(model, [(ctx, greedy), (ctx, greedy[:2] + [greedy[2] + 1])])
    assert is_greedy and not other and ll < 0


def test_requests_sharing_model_inputs_are_scored_from_one_row_correctly(model):
    # same context + continuation[:-1] (lm-eval groups these), continuations of different lengths
    ctx, cont = [1, 40, 41, 42, 43], [44, 45, 46]
    reqs = [(ctx, cont), (ctx + cont[:1], cont[1:]), (ctx + cont[:2], cont[2:]), (ctx, [44, 45, 99])]
    got = score_tokens(model, reqs, batch_size=2)
    for (c, x), (ll, gr) in zip(reqs, got):
        e = direct_logprob(model, c, x)
        assert abs(ll - e[0]) < 1e-4 and gr == e[1]


def test_long_requests_are_cut_from_the_left_to_max_length(model):
    ctx, cont = list(range(300, 340)), [341, 342]
    (ll, _), = score_tokens(model, [(ctx, cont)], max_length=10)
    assert abs(ll - direct_logprob(model, ctx[-9:], cont)[0]) < 1e-4          # 10 input ids: 9 of ctx + 1 of cont
    with pytest.raises(ValueError, match="continuation of 12 tokens, longer than max_length = 10"):
        score_tokens(model, [(ctx, list(range(12)))], max_length=10)
    with pytest.raises(ValueError, match="request 0 has an empty context"):
        score_tokens(model, [([], [5])])


def test_loglikelihood_of_text_pairs_and_rolling_sum(model, tok):
    (ll, _), = loglikelihood(model, tok, [("The cat ", "sat")])
    assert abs(ll - direct_logprob(model, *encode_pair(tok, "The cat ", "sat"))[0]) < 1e-4
    text = "The rolling window cuts a long text into pieces. " * 3
    ids = encode(tok, text)
    whole = sum(direct_logprob(model, c, x)[0] for c, x in rolling_windows(ids, tok.bos_id, 8))
    assert abs(loglikelihood_rolling(model, tok, [text], max_length=8)[0] - whole) < 1e-3
    with pytest.raises(TypeError, match="not one string"):
        loglikelihood_rolling(model, tok, text)


def test_bf16_int8_and_packed_models_score_close_to_float(model, tok):
    import copy

    from mistral_nb.speed.cpu_pack import pack_available, pack_model
    from mistral_nb.speed.int8 import quantize_model

    pairs = [("The capital of France is", " Paris"), ("One, two,", " three")]
    ref = [ll for ll, _ in loglikelihood(model, tok, pairs)]
    others = [copy.deepcopy(model).to(torch.bfloat16), quantize_model(copy.deepcopy(model))]
    if pack_available():                       # bf16 weights packed for oneDNN (chapter 9)
        others.append(pack_model(copy.deepcopy(model).to(torch.bfloat16)))
    for other in others:
        got = [ll for ll, _ in loglikelihood(other, tok, pairs)]
        assert max(abs(a - b) for a, b in zip(got, ref)) < 0.05 * max(abs(r) for r in ref)


def test_a_model_with_the_wrong_output_is_named():
    class Flat(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(tokens.shape[0], 7)

    with pytest.raises(ValueError, match="must map ids"):
        score_tokens(Flat(), [([1], [2])])


# ------------------------------------------------------------------ metrics
def test_acc_and_acc_norm_by_hand():
    lls, choices = [-10.0, -12.0], ["a", "b" * 10]          # acc: -10 > -12; acc_norm: -10/1 < -12/10
    assert M.mc_prediction(lls, choices) == (0, 1)
    assert M.mc_prediction([-3.0, -3.0], ["x", "y"]) == (0, 0)        # ties: the first, as numpy's argmax
    out = M.multiple_choice([(lls, choices, 1), ([-1.0, -5.0], ["a", "b"], 0), ([-2.0, -1.0], ["aa", "b"], 1),
                             ([-1.0, -2.0], ["a", "b"], 0)])
    assert out["acc_items"] == [0.0, 1.0, 1.0, 1.0] and out["acc_norm_items"] == [1.0, 1.0, 0.0, 1.0]   # -2/2 = -1/1: tie
    assert out["acc"] == 0.75 and out["acc_stderr"] == pytest.approx(0.25)     # sample sd 0.5 / sqrt(4)
    with pytest.raises(ValueError, match="gold index 2"):
        M.multiple_choice([([-1.0, -2.0], ["a", "b"], 2)])


def test_stderr_and_interval():
    scores = [1.0] * 30 + [0.0] * 70
    se = math.sqrt(0.3 * 0.7 * 100 / 99) / 10
    assert M.mean_stderr(scores) == pytest.approx(se)
    lo, hi = M.interval95(scores)
    assert (lo, hi) == pytest.approx((0.3 - 1.959964 * se, 0.3 + 1.959964 * se), abs=1e-6)
    assert M.interval95([1.0, 1.0, 1.0, 0.0])[1] == 1.0                # 0/1 scores: clipped to [0, 1]


def test_perplexities_and_bits_per_byte_by_hand():
    lls, texts = [-2.0, -4.0], ["ab cd", "é"]                  # 2 + 1 words, 5 + 2 bytes
    r = M.rolling_metrics(lls, texts)
    assert (r["words"], r["bytes"]) == (3, 7)
    assert r["word_perplexity"] == pytest.approx(math.exp(2.0))
    assert r["byte_perplexity"] == pytest.approx(math.exp(6 / 7))
    assert r["bits_per_byte"] == pytest.approx(6 / 7 / math.log(2))
    assert M.count_words("a  b\n") == 3                          # lm-eval's re.split: a trailing "" counts
    assert M.perplexity([-1.0, -3.0]) == pytest.approx(math.exp(2.0))


def test_exact_match_options():
    assert M.exact_match(["Paris", "paris", "Paris."], ["Paris"] * 3) == [1.0, 0.0, 0.0]
    assert M.exact_match(["paris", "Paris."], ["Paris", "Paris"], ignore_case=True, ignore_punctuation=True) == [1.0, 1.0]
    assert M.exact_match(["a1b"], ["ab"], ignore_numbers=True) == [1.0]
    assert M.exact_match(["The answer: 7"], ["7"], regexes_to_ignore=[r"^The answer: "]) == [1.0]


def test_majority_vote_and_maj_at_k():
    assert M.majority_vote(["3", "5", "5", "3", "7"]) == "3"        # tie between 3 and 5: the first seen
    assert M.majority_vote(["1", "2", "2"]) == "2"
    samples = [["4", "4", "5", "9"], ["1", "2", "2", "2"], ["7", "8", "8", "7"]]
    assert M.maj_at_k(samples, ["4", "2", "8"], k=4) == pytest.approx(2 / 3)   # item 3: 7 wins the tie
    assert M.maj_at_k(samples, ["4", "2", "8"], k=1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="fewer than k = 5"):
        M.maj_at_k(samples, ["4", "2", "8"], k=5)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_chance_that_some_of_k_draws_pass(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))          # every way to keep k of the n samples
            by_definition = sum(any(s) for s in subsets) / len(subsets)
            assert M.pass_at_k(n, c, k) == pytest.approx(by_definition)
            assert M.pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)                   # pass@1 = c / n
    with pytest.raises(ValueError, match="k must be an int in"):
        M.pass_at_k(5, 2, 6)


def test_bootstrap_interval_is_seeded_and_brackets_the_statistic():
    data = [float(i % 7) for i in range(200)]
    a, b = M.bootstrap_interval(M.mean, data, iters=300, seed=3), M.bootstrap_interval(M.mean, data, iters=300, seed=3)
    assert a == b and a[0] < M.mean(data) < a[1]


# ------------------------------------------------------------------ few-shot prompts
def test_fewshot_sampler_draws_like_random_sample_in_item_order():
    pool = [{"q": str(i)} for i in range(10)]
    s, ref = FewshotSampler(pool, seed=1234), random.Random(1234)
    assert [s.sample(3) for _ in range(4)] == [ref.sample(pool, 3) for _ in range(4)]
    s = FewshotSampler(pool, seed=0)
    for item in pool:
        assert item not in s.sample(4, item) and len(s.sample(4, item)) == 4
    assert FewshotSampler(pool).sample(0) == []
    with pytest.raises(ValueError, match="11 examples asked from a pool of 10"):
        FewshotSampler(pool).sample(11)


def test_fewshot_context_layout():
    docs = [{"q": "2+2=", "a": "4"}, {"q": "3+3=", "a": "6"}]
    item = {"q": "1+1=", "a": "2"}
    assert fewshot_context(item, docs, "q", "a", description="Sums.\n") == "Sums.\n2+2= 4\n\n3+3= 6\n\n1+1="
    assert fewshot_context(item, [], "q", "a") == "1+1="
    mc = {"q": "Sky?", "choices": ["red", "blue"], "gold": 1}
    assert fewshot_context(item, [mc], "q", "gold", "choices", target_delimiter="", fewshot_delimiter="\n") \
        == "Sky?blue\n1+1="
    ctxs = fewshot_contexts([item, item], docs, 1, "q", "a", seed=5)
    ref = random.Random(5)
    assert ctxs == [fewshot_context(item, ref.sample(docs, 1), "q", "a") for _ in range(2)]


# ------------------------------------------------------------------ generation
def test_stop_strings_answer_extraction_and_settings():
    assert cut_at_stop("Paris is nice.\nNext", ["\n", "."]) == "Paris is nice"
    assert cut_at_stop("a b", ["", " "]) == "a"
    assert extract_answer("so 12 + 30 = 42\n#### 42") == "42"
    assert extract_answer("no number") == "[invalid]"
    assert extract_answer("The answer is 7. The answer is 8.", r"The answer is (\-?[0-9\.\,]*[0-9]+)", select=-1) == "8"
    assert extract_answer("x 3 y 5", r"(\d)|(y)") == "3"
    kw = normalize_gen_kwargs({"until": "\n", "max_new_tokens": 5, "temperature": 0.7})
    assert kw == {"until": ["\n"], "max_gen_toks": 5, "temperature": 0.7, "top_p": 1.0}
    assert normalize_gen_kwargs({"do_sample": False, "temperature": 0.7})["temperature"] == 0.0
    with pytest.raises(TypeError, match="until must be"):
        normalize_gen_kwargs({"until": [3]})


def test_generate_until_equals_generate_cut_at_the_stop(model, tok):
    from mistral_nb import generate

    contexts = ["The window slides", "A cache of W slots holds the last keys and"]
    free = generate_until(model, tok, contexts, until=[], max_gen_toks=10)
    for c, text in zip(contexts, free):
        assert text == tok.decode(generate(model, [encode(tok, c)], max_new_tokens=10, eos_id=tok.eos_id)[0])
    stop = free[1][len(free[1]) // 2:len(free[1]) // 2 + 2]                    # two characters from its middle
    cut = generate_until(model, tok, contexts[1:], until=[stop], max_gen_toks=10)[0]
    assert cut == free[1].split(stop)[0] and len(cut) < len(free[1])


def test_generation_stops_once_every_row_has_a_stop_string(model, tok):
    prompt = encode(tok, "Stop here")
    full = _generate_batch(model, tok, [prompt], [], 40, 0.0, 1.0, None)[0]
    first = tok.decode(full[:1])
    stopped = _generate_batch(model, tok, [prompt], [first], 40, 0.0, 1.0, None)[0] if first else full
    assert len(full) == 40 and (not first or len(stopped) == STOP_CHECK_EVERY)


# ------------------------------------------------------------------ tasks run without lm-eval
class ShortestScorer:
    """A stand-in scorer: log-likelihood = -(characters of the continuation); generation echoes 'x'."""

    def loglikelihood(self, pairs, progress=None):
        return [(-float(len(x)), len(x) < 3) for _, x in pairs]

    def loglikelihood_rolling(self, texts, progress=None):
        return [-float(len(t)) for t in texts]

    def generate_until(self, contexts, gen_kwargs=None, progress=None, seed=None):
        return ["x"] * len(contexts)


def test_harness_builds_requests_and_metrics_from_a_task():
    docs = [{"q": "Pick", "choices": ["aa", "b", "ccc"], "label": 1}, {"q": "Pick", "choices": ["aa", "b"], "label": 0}]
    task = Task("t", "multiple_choice", docs, docs, "q", "label", "choices")
    r = evaluate(ShortestScorer(), task)
    # log-likelihoods -3, -2, -4 (" aa", " b", " ccc"); normalised by the choices' characters: -1.5, -2, -1.33
    assert r["acc_items"] == [1.0, 0.0] and r["acc_norm_items"] == [0.0, 1.0]
    assert r["contexts"] == ["Pick", "Pick"] and r["lls"][0] == [-3.0, -2.0, -4.0]   # " aa", " b", " ccc"
    gen = evaluate(ShortestScorer(), Task("g", "generate_until", [{"q": "?", "a": "x"}, {"q": "?", "a": "y"}], [],
                                          "q", "a"))
    assert gen["exact_match_items"] == [1.0, 0.0]
    roll = evaluate(ShortestScorer(), Task("r", "loglikelihood_rolling", [{"text": "ab"}, {"text": "cdé"}], [], "", "text"))
    assert roll["bits_per_byte"] == pytest.approx(5 / 6 / math.log(2))
    with pytest.raises(ValueError, match="takes no few-shot"):
        evaluate(ShortestScorer(), Task("r", "loglikelihood_rolling", [{"text": "ab"}], [], "", "text"), num_fewshot=2)


@pytest.mark.parametrize("name,kind,chance", [("mnb_next_sentence", "multiple_choice", 0.25),
                                              ("mnb_sentence_order", "multiple_choice", 0.5),
                                              ("mnb_cloze", "loglikelihood", 0.0),
                                              ("mnb_cloze_gen", "generate_until", 0.0),
                                              ("mnb_val_rolling", "loglikelihood_rolling", None)])
def test_committed_task_files_read_back(name, kind, chance):
    task = read_task(recorded_path(f"experiments/eval_tasks/{name}.yaml"))
    assert task.output_type == kind and task.metadata.get("chance") == chance and len(task.docs) >= 60
    if kind == "multiple_choice":
        assert all(0 <= d["label"] < len(d["choices"]) == (4 if chance == 0.25 else 2) for d in task.docs)
        assert {d["doc"] for d in task.docs}.isdisjoint({d["doc"] for d in task.fewshot_docs})
    if name == "mnb_cloze":
        assert all(d["target"] == " " + d["answer"] and d["answer"].lower() in d["context"].lower() for d in task.docs)


def test_task_reader_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"q": "a", "a": "b"}\n')
    base = "task: t\noutput_type: generate_until\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\ntest_split: test\n"
    (tmp_path / "jinja.yaml").write_text(base + "doc_to_text: '{{q}}'\n")
    (tmp_path / "filters.yaml").write_text(base + "filter_list: []\n")
    (tmp_path / "ok.yaml").write_text(base + "doc_to_text: q\ndoc_to_target: a\n")
    with pytest.raises(ValueError, match="Jinja template"):
        read_task(tmp_path / "jinja.yaml")
    with pytest.raises(ValueError, match=r"does not support: \['filter_list'\]"):
        read_task(tmp_path / "filters.yaml")
    assert read_task(tmp_path / "ok.yaml").docs == [{"q": "a", "a": "b"}]


# ------------------------------------------------------------------ baselines
def test_ngram_scorer_sums_the_bigram_log_probabilities(tok):
    train = torch.tensor(tok.encode("the cat sat on the mat. the cat ate. " * 20, bos=True))
    bigram = BigramLM(tok.vocab_size, ignore_ids=(tok.bos_id,)).fit(train)
    ctx, cont = encode_pair(tok, "the cat", " sat on")
    (ll, greedy), = NgramScorer(bigram, tok).loglikelihood([("the cat", " sat on")])
    prev = [ctx[-1]] + cont[:-1]
    assert ll == pytest.approx(sum(math.log(float(bigram.probs(a)[b])) for a, b in zip(prev, cont)))
    assert greedy == all(int(bigram.probs(a).argmax()) == b for a, b in zip(prev, cont))
    unigram = UnigramLM(tok.vocab_size).fit(train)
    (ul, _), = NgramScorer(unigram, tok).loglikelihood([("the cat", " sat on")])
    assert ul == pytest.approx(sum(math.log(float(unigram.probs()[b])) for b in cont))
    with pytest.raises(NotImplementedError):
        NgramScorer(unigram, tok).generate_until(["x"])


# ------------------------------------------------------------------ the public benchmarks (chapter 14's GPU cell)
HELLASWAG_ROWS = [
    {"activity_label": "Baking", "ctx_a": "A man pours flour into a bowl.", "ctx_b": "he", "label": "2",
     "endings": ["flies away [title] Then.", "sings.", "adds two eggs and stirs.", "  sleeps  now."]},
    {"activity_label": "Running", "ctx_a": "A woman ties her shoes.", "ctx_b": "she", "label": "0",
     "endings": ["starts to run.", "eats the shoe.", "paints a wall.", "[header] melts."]},
]
ARC_ROWS = [{"id": "q1", "question": "Which is a liquid at room temperature?", "answerKey": "B",
             "choices": {"text": ["iron", "water", "salt"], "label": ["A", "B", "C"]}}]


def test_public_benchmarks_are_prompted_as_lm_eval_does_and_score_with_a_random_model(model, tok):
    (ctx, choices, gold), _ = items_of(HELLASWAG_ROWS, "hellaswag")
    assert ctx == "Baking: A man pours flour into a bowl. He" and gold == 2
    assert choices == ["flies away. Then.", "sings.", "adds two eggs and stirs.", "sleeps now."]
    assert hellaswag_preprocess("[header] melts.") == " melts."
    assert items_of(ARC_ROWS, "arc_easy") == [("Question: Which is a liquid at room temperature?\nAnswer:",
                                              ["iron", "water", "salt"], 1)]
    r = score_dataset(model, tok, HELLASWAG_ROWS * 3, "hellaswag", limit=5)
    assert r["n"] == 5 and r["paper"] == 0.813 and 0 <= r["acc"] <= 1 and len(r["acc_norm_items"]) == 5
    with pytest.raises(ValueError, match="lacks a field"):
        items_of([{"question": "?"}], "arc_easy")
    # the GPU cell's call, rehearsed with stand-in datasets and the random tiny model
    lines = paper_comparison(model, tok, {"hellaswag": HELLASWAG_ROWS, "arc_easy": ARC_ROWS * 2}, limit=300, progress=False)
    assert lines[0].startswith("hellaswag: 2 items, acc ") and lines[0].endswith("the paper: 0.813 (all items)")
    assert lines[1].startswith("arc_easy: 2 items") and "the paper: 0.800" in lines[1]


def test_scorer_object_and_lazy_lm_eval_import():
    out = subprocess.run([sys.executable, "-c", "import sys, mistral_nb.evals as e, mistral_nb.evals.harness; "
                          "print('lm_eval' in sys.modules, e.__all__)"], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[0] == "False", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import mistral_nb.evals as e
        e.Nope
    with pytest.raises(ValueError, match="Scorer: batch_size must be an int"):
        Scorer(None, None, batch_size=0)


# ------------------------------------------------------------------ agreement (llama-perplexity --kl-divergence)
def test_agreement_sums_equal_the_direct_computation_in_any_batching():
    from mistral_nb.evals.agreement import Agreement

    g = torch.Generator().manual_seed(0)
    base, other = torch.randn(3, 50, 11, generator=g), torch.randn(3, 50, 11, generator=g)
    other = base + 0.3 * other                                        # a "quantized" model: close, not equal
    targets, keep = torch.randint(0, 11, (3, 50), generator=g), torch.rand(3, 50, generator=g) > 0.2
    whole = Agreement().add(base, other, targets, keep).summary(decimals=12)
    parts = Agreement()
    for b in range(3):
        parts.add(base[b], other[b], targets[b], keep[b])
    assert parts.summary(decimals=12) == pytest.approx(whole, rel=1e-9)

    lb, lq = (torch.log_softmax(x[keep].double(), -1) for x in (base, other))
    t = targets[keep]
    nll_b, nll_q = -lb.gather(1, t[:, None])[:, 0], -lq.gather(1, t[:, None])[:, 0]
    kld = (lb.exp() * (lb - lq)).sum(1)
    n = int(keep.sum())
    assert whole["tokens"] == n
    assert whole["ppl_base"] == pytest.approx(float(nll_b.mean().exp()), rel=1e-9)
    assert whole["ppl_ratio"] == pytest.approx(float((nll_q - nll_b).mean().exp()), rel=1e-9)
    assert whole["mean_kld"] == pytest.approx(float(kld.mean()), rel=1e-9)
    assert whole["mean_kld_err"] == pytest.approx(float(kld.std() / n ** 0.5), rel=1e-9)
    # the ratio's error uses the per-token difference of the two NLLs (they are strongly correlated)
    assert whole["ppl_ratio_err"] == pytest.approx(whole["ppl_ratio"] * float((nll_q - nll_b).std() / n ** 0.5), rel=1e-6)
    assert whole["same_top"] == pytest.approx(float((lq.argmax(1) == lb.argmax(1)).double().mean()), rel=1e-12)

    same = Agreement().add(base, base, targets).summary()
    assert same["ppl_ratio"] == 1.0 and same["mean_kld"] == 0.0 and same["same_top"] == 1.0
    with pytest.raises(ValueError, match="do not match"):
        Agreement().add(base, other[:, :-1], targets)
