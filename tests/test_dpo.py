"""DPO (mistral_nb.training.dpo): the loss equals trl's DPOTrainer on identical inputs; a LoRA model is
its own reference with the adapters off; a short run prefers the chosen answers."""

import math

import pytest
import torch

from helpers import random_hf_model, random_model, tiny_args
from mistral_nb import load_model
from mistral_nb.lora import apply_lora
from mistral_nb.training.dpo import Pair, dpo_batches, dpo_loss, dpo_objective, pair_batch, sequence_logps
from mistral_nb.training.sft import fit

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [Pair([1, 5, 6, 7], [8, 9, 2], [10, 2]), Pair([1, 11, 12], [13, 2], [14, 15, 16, 2]),
         Pair([1, 20, 21, 22, 23], [24, 25, 26, 2], [27, 2])]


def test_dpo_loss_equals_trl_s_on_the_same_models_and_pairs(tmp_path):
    """trl's DPOTrainer.compute_loss (sigmoid loss, beta 0.1, its own collator) on transformers' models,
    against ours on the same weights loaded by this package."""
    import trl  # noqa: F401  (required by requirements.txt: a broken install must fail, not skip)
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    args = tiny_args()
    policy_hf, ref_hf = random_hf_model(args, seed=1), random_hf_model(args, seed=2)
    policy_hf.save_pretrained(str(tmp_path / "policy"))
    ref_hf.save_pretrained(str(tmp_path / "ref"))
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(args.vocab_size)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()          # trl wants a tokenizer; ours are pre-tokenized
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="t0", eos_token="t2", bos_token="t1")
    config = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, report_to=[], use_cpu=True, bf16=False,
                       per_device_train_batch_size=len(PAIRS))     # bf16=False: else accelerate runs the reference in bf16
    trainer = DPOTrainer(model=policy_hf, ref_model=ref_hf, args=config, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([{"prompt": "t5", "chosen": " t6", "rejected": " t7"}]))
    inputs = DataCollatorForPreference(pad_token_id=0)(
        [{"prompt_ids": p.prompt, "chosen_ids": p.chosen, "rejected_ids": p.rejected} for p in PAIRS])
    trainer.model.eval()
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, inputs).item()
        batch = pair_batch(PAIRS)
        rows = [p.prompt + p.chosen for p in PAIRS] + [p.prompt + p.rejected for p in PAIRS]   # trl's order too
        assert [r[:len(want)] for r, want in zip(inputs["input_ids"].tolist(), rows)] == rows
        policy, ref = load_model(tmp_path / "policy"), load_model(tmp_path / "ref")
        pc, pr = sequence_logps(policy, batch).chunk(2)
        rc, rr = sequence_logps(ref, batch).chunk(2)
        ours = dpo_loss(pc, pr, rc, rr, beta=0.1)[0].item()
    assert abs(ours - theirs) < 1e-6 and abs(theirs - math.log(2)) > 1e-3


def test_sequence_logps_sums_the_answer_tokens_only():
    model = random_model(tiny_args(), seed=3).eval()
    batch = pair_batch(PAIRS[:1])
    with torch.no_grad():
        logits = model(batch.tokens)
        got = sequence_logps(model, batch)
    logp = logits.log_softmax(-1)
    # chosen: prompt [1 5 6 7] + [8 9 2]: targets 8, 9, 2 read at positions 3, 4, 5
    want = logp[0, 3, 8] + logp[0, 4, 9] + logp[0, 5, 2]
    assert abs(got[0].item() - want.item()) < 1e-5


def test_the_loss_is_log_2_where_the_policy_is_the_reference_and_falls_with_the_margin():
    zero = torch.zeros(3)
    loss, chosen, rejected = dpo_loss(zero, zero, zero, zero)
    assert abs(loss.item() - math.log(2)) < 1e-7 and not chosen.any() and not rejected.any()
    better = dpo_loss(torch.tensor([-1.0]), torch.tensor([-5.0]), torch.tensor([-2.0]), torch.tensor([-4.0]), beta=0.5)
    assert abs(better[0].item() - (-math.log(1 / (1 + math.exp(-0.5 * ((-1 + 2) - (-5 + 4))))))) < 1e-6
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(zero, zero, zero, zero, beta=0)


def test_a_short_dpo_run_with_lora_prefers_the_chosen_answers():
    """The reference is the model with its adapters off (B = 0 at the start: loss exactly ln 2)."""
    model = random_model(tiny_args(), seed=4)
    torch.manual_seed(0)
    apply_lora(model, r=4, targets=("wq", "wv", "w2"))
    objective = dpo_objective(beta=0.5)
    batch = pair_batch(PAIRS)
    with torch.no_grad():
        assert abs(objective(model, batch).item() - math.log(2)) < 1e-6
    history = fit(model, dpo_batches(PAIRS, batch_size=3), steps=20, loss_fn=objective, lr=1e-2, warmup=2)
    with torch.no_grad():
        after = objective(model, batch).item()
    assert after < 0.5 * math.log(2) and history.loss[0] == pytest.approx(math.log(2), abs=1e-6)
