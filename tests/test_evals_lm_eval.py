"""MistralLM equals lm-evaluation-harness's own HFLM, request by request and metric by metric.

The committed English model (experiments/results/english_swa) is converted to Hugging Face's layout
and run by lm-eval's ``HFLM`` (transformers' MistralForCausalLM, with Mistral's own tokenizer through
transformers' ``MistralCommonBackend``, which encodes exactly as sentencepiece does). The same weights
run as ``mistral_nb.Transformer`` inside ``MistralLM``. Both go through ``lm_eval.simple_evaluate``
on this repository's task files (experiments/eval_tasks, ``include_path``): every request's
log-likelihood agrees to 1e-4, and acc, acc_norm, perplexities and exact match are identical. The
package's own harness (no lm-eval) gives the same prompts and numbers. ``max_length`` 128 makes
contexts longer than the model's input cut from the left, and documents rolled in many windows.
"""

import pytest
import torch

import lm_eval  # noqa: E402  (required by requirements.txt: a broken install must fail, not skip)

from mistral_nb import Tokenizer, load_model  # noqa: E402
from mistral_nb.book.results import recorded_checkpoint, recorded_path  # noqa: E402
from mistral_nb.evals import MistralLM  # noqa: E402
from mistral_nb.evals.lm_eval_model import save_for_hflm  # noqa: E402
from mistral_nb.evals.harness import evaluate, read_task  # noqa: E402
from mistral_nb.evals.scoring import Scorer, rolling_windows, score_tokens  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_LENGTH = 128
TOL = 1e-4          # per request; relative 1e-6 above |ll| = 100, where float32 sums resolve only ~1e-5 or worse


def close(x: float, y: float) -> bool:
    return abs(x - y) <= max(TOL, 1e-6 * abs(x))


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = load_model(recorded_checkpoint("experiments/results/english_swa"))
    folder = save_for_hflm(model, tmp_path_factory.mktemp("english_swa") / "hf")
    hf = HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=8, max_length=MAX_LENGTH)
    ours = MistralLM(model, Tokenizer.mistral_v1(), batch_size=8, max_length=MAX_LENGTH)
    tasks = TaskManager(include_path=str(recorded_path("experiments/eval_tasks/mnb_cloze.yaml").parent),
                        include_defaults=False)
    return hf, ours, tasks


def run(lm, task_manager, tasks, limit, num_fewshot=None):
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, num_fewshot=num_fewshot,
                                   task_manager=task_manager, bootstrap_iters=0, log_samples=True)


def responses(out, task):
    """Per request, in lm-eval's order: (prompt arguments, raw response)."""
    return [(s["arguments"], r) for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])
            for r in s["resps"]]


def largest_ll_difference(a, b, task):
    ra, rb = responses(a, task), responses(b, task)
    assert [x for x, _ in ra] == [x for x, _ in rb]                       # the same prompts, request by request
    diffs = []
    for (_, x), (_, y) in zip(ra, rb):
        x, y = x[0], y[0]
        if isinstance(x, (list, tuple)):                                  # loglikelihood: (ll, is_greedy)
            assert bool(x[1]) == bool(y[1])
            x, y = x[0], y[0]
        assert close(float(x), float(y)), (task, x, y)
        diffs.append(abs(float(x) - float(y)))
    return max(diffs), len(diffs)


def metrics(out, task, names):
    return {n: out["results"][task][f"{n},none"] for n in names}


def test_multiple_choice_few_shot_equals_hflm(lms):
    hf, ours, tm = lms
    tasks = ["mnb_next_sentence", "mnb_sentence_order"]
    a, b = run(hf, tm, tasks, limit=6, num_fewshot=2), run(ours, tm, tasks, limit=6, num_fewshot=2)
    for task in tasks:
        diff, n = largest_ll_difference(a, b, task)
        assert n == 6 * (4 if task == "mnb_next_sentence" else 2) and diff < TOL, (task, diff)
        assert metrics(a, task, ["acc", "acc_norm"]) == metrics(b, task, ["acc", "acc_norm"])
        # the package's own harness builds the same 2-shot prompts and finds the same accuracies
        own = evaluate(Scorer(ours.model, ours.tokenizer, max_length=MAX_LENGTH),
                       read_task(recorded_path(f"experiments/eval_tasks/{task}.yaml")), num_fewshot=2, limit=6)
        prompts = [s["arguments"][0][0] for s in sorted(b["samples"][task], key=lambda s: s["doc_id"])]
        assert own["contexts"] == prompts
        assert (own["acc"], own["acc_norm"]) == tuple(metrics(b, task, ["acc", "acc_norm"]).values())


def test_loglikelihood_cloze_equals_hflm(lms):
    hf, ours, tm = lms
    a, b = run(hf, tm, ["mnb_cloze"], limit=12), run(ours, tm, ["mnb_cloze"], limit=12)
    diff, n = largest_ll_difference(a, b, "mnb_cloze")
    assert n == 12 and diff < TOL
    ma, mb = metrics(a, "mnb_cloze", ["acc", "perplexity"]), metrics(b, "mnb_cloze", ["acc", "perplexity"])
    assert ma["acc"] == mb["acc"] and ma["perplexity"] == pytest.approx(mb["perplexity"], rel=1e-5)


def test_rolling_perplexity_equals_hflm(lms):
    hf, ours, tm = lms
    names = ["word_perplexity", "byte_perplexity", "bits_per_byte"]
    a, b = run(hf, tm, ["mnb_val_rolling"], limit=2), run(ours, tm, ["mnb_val_rolling"], limit=2)
    diff, n = largest_ll_difference(a, b, "mnb_val_rolling")                 # two documents of ~1,000 tokens
    assert n == 2
    docs = [r for r, _ in responses(b, "mnb_val_rolling")]
    # a document's log-likelihood is the sum of its windows': each window is one request to the model
    windows = [w for d in docs for w in rolling_windows(hf.tok_encode(d[0][0]), hf.prefix_token_id, MAX_LENGTH)]
    per_hf = [hf._loglikelihood_tokens([(None, *w)], disable_tqdm=True)[0][0] for w in windows]
    per_ours = [ll for ll, _ in score_tokens(ours.model, windows, max_length=MAX_LENGTH)]
    assert len(windows) > 10 and all(close(x, y) for x, y in zip(per_hf, per_ours))
    ma, mb = metrics(a, "mnb_val_rolling", names), metrics(b, "mnb_val_rolling", names)
    assert ma == pytest.approx(mb, rel=1e-6)
    own = evaluate(ours.scorer, read_task(recorded_path("experiments/eval_tasks/mnb_val_rolling.yaml")), limit=2)
    assert {k: own[k] for k in names} == pytest.approx(mb, rel=1e-6)


def test_generation_with_exact_match_equals_hflm(lms):
    hf, ours, tm = lms
    a, b = run(hf, tm, ["mnb_cloze_gen"], limit=10, num_fewshot=1), run(ours, tm, ["mnb_cloze_gen"], limit=10, num_fewshot=1)
    ra, rb = responses(a, "mnb_cloze_gen"), responses(b, "mnb_cloze_gen")
    assert [r for _, r in ra] == [r for _, r in rb] and len(ra) == 10      # the same generated strings
    assert metrics(a, "mnb_cloze_gen", ["exact_match"]) == metrics(b, "mnb_cloze_gen", ["exact_match"])


def test_where_hflm_differs_requests_sharing_inputs_with_shorter_continuations(lms):
    """lm-eval groups requests whose context + continuation[:-1] are equal and scores them from one row,
    but gathers a shorter continuation's log-probabilities from the *first* positions of the row
    (``torch.gather`` on the longest continuation's logits), not the last: such a request gets
    another number than when it is scored alone. A periodic text rolled in windows of 64 hits it.
    Here each request is scored from the last positions, as when alone."""
    hf, ours, _ = lms
    ids = ours.tokenizer.encode("Python is a programming language. " * 30, bos=True)   # period: 6 tokens
    windows = rolling_windows(ids, ours.tokenizer.bos_id, 64)
    assert tuple(windows[1][0] + windows[1][1][:-1]) == tuple(windows[2][0] + windows[2][1][:-1])
    together = hf._loglikelihood_tokens([(None, *w) for w in windows], disable_tqdm=True)
    alone = [hf._loglikelihood_tokens([(None, *w)], disable_tqdm=True)[0] for w in windows]
    mine = score_tokens(ours.model, windows, batch_size=8, max_length=64)
    assert abs(together[2][0] - alone[2][0]) > 10                          # lm-eval's number for window 3 moves
    assert all(close(m[0], s[0]) for m, s in zip(mine, alone))             # ours is the alone number
    with torch.no_grad():
        assert torch.isfinite(ours.model(torch.tensor([ids[:8]]))).all()
