"""Tensor parallelism (mistral_nb.parallel) on 2 and 4 CPU processes over gloo.

The expensive part — starting processes — happens once per degree: one ``launch`` runs every check on
the same ranks (both checkpoint layouts, written by transformers; on 2 ranks also PyTorch's DTensor
plan; on 4 ranks also a random model with 4 key/value heads), and the tests below read its reports.
Every launch is bounded by a timeout and stops its processes on failure (tested too).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import tiny_args
from mistral_nb import ModelArgs, generate, load_model
from mistral_nb.checkpoint.safetensors_file import CheckpointError
from mistral_nb.parallel import (Partition, ThreadComm, check_degree, check_parity, comm_bytes_per_token,
                                 launch, load_tensor_parallel, parallelize_with_dtensor, rank_parameter_bytes,
                                 run_all, valid_degrees)
from mistral_nb.parallel.comm import ThreadHub

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [[1, 5, 9, 20, 7, 3, 44, 12, 8, 100, 2], [1, 8]]    # the first is longer than W = 8: chunked prefill
NEW_TOKENS = 10
SEQ_LEN = 24                                                  # 3 windows: the whole-sequence forward is banded
TIMEOUT = 240


def mha_source(args: ModelArgs) -> dict:
    """A random model with 4 key/value heads: split, not replicated, on 4 ranks."""
    return {"args": args.replace(n_kv_heads=4).to_dict(), "seed": 7}


@pytest.fixture(scope="module")
def reports(hf_pair):
    """{degree: [[report per source] per rank]} from one launch per degree."""
    _, hf_dir, mistral_dir = hf_pair
    args = tiny_args()
    out = {}
    for world in (2, 4):
        calls = [(check_parity, (str(hf_dir), PROMPTS), dict(max_new_tokens=NEW_TOKENS, seq_len=SEQ_LEN,
                                                               dtensor=world == 2)),
                 (check_parity, (str(mistral_dir), PROMPTS), dict(max_new_tokens=NEW_TOKENS, seq_len=SEQ_LEN))]
        if world == 4:
            calls.append((check_parity, (mha_source(args), PROMPTS), dict(max_new_tokens=NEW_TOKENS, seq_len=SEQ_LEN)))
        results, how = launch(run_all, world, (calls,), timeout=TIMEOUT, mode="processes")
        assert how == "processes"
        out[world] = results
    return out


def all_reports(reports, world):
    return [rep for rank_reports in reports[world] for rep in rank_reports]


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("world", [2, 4])
def test_logits_equal_the_single_process_model(reports, world):
    for rep in all_reports(reports, world):
        assert rep["world"] == world
        # float32 rounding: the ranks' partial sums are added in another order than one matmul adds them
        assert rep["max_abs"] < 1e-5 * max(1.0, rep["max_ref"]), rep
        assert rep["rel"] < 2e-6, rep                            # ~2.5e-7 measured; a wrong split gives ~1e-1


@pytest.mark.parametrize("world", [2, 4])
def test_greedy_generation_through_the_rolling_cache_is_identical(reports, world):
    for rep in all_reports(reports, world):
        assert rep["tokens_tp"] == rep["tokens_single"], rep["kind"]
        assert [len(t) for t in rep["tokens_tp"]] == [NEW_TOKENS] * len(PROMPTS)
    by_rank = [rank_reports[0]["tokens_tp"] for rank_reports in reports[world]]
    assert all(t == by_rank[0] for t in by_rank)              # every rank sampled the same tokens


def test_both_checkpoint_layouts_give_the_same_shards(reports):
    for world in (2, 4):
        for hf, mistral in (rank_reports[:2] for rank_reports in reports[world]):
            assert hf["tokens_tp"] == mistral["tokens_tp"]
            assert hf["param_bytes"] == mistral["param_bytes"]


# ---------------------------------------------------------------------------------------------- memory


def independent_rank_bytes(args: ModelArgs, world: int, bytes_per_value: int = 4) -> int:
    """Per-rank bytes computed from the architecture, without the package's partition code."""
    L, d, hd, H, K, F, V = (args.n_layers, args.dim, args.head_dim, args.n_heads, args.n_kv_heads,
                            args.hidden_dim, args.vocab_size)
    split = L * (2 * H * hd * d + 3 * F * d) + 2 * V * d       # wq, wo, w1, w2, w3; embedding and output
    kv = L * 2 * K * hd * d                                    # wk, wv
    norms = (2 * L + 1) * d
    kv_per_rank = kv // world if world <= K else kv // K       # beyond K ranks: one whole kv head each
    return (split // world + kv_per_rank + norms) * bytes_per_value


@pytest.mark.parametrize("world", [2, 4])
def test_each_rank_holds_and_reads_one_nth_of_the_split_weights(reports, world):
    args = tiny_args()
    expected = independent_rank_bytes(args, world)
    for rank_reports in reports[world]:
        hf, mistral = rank_reports[:2]
        for rep in (hf, mistral):
            assert rep["param_bytes"] == rep["param_bytes_expected"] == expected
            assert rep["bytes_read"] == expected                # only its slices came off the disk
    if world <= args.n_kv_heads:                               # all split: n ranks hold the model once
        from mistral_nb.checkpoint import empty_model

        norms = (2 * args.n_layers + 1) * args.dim * 4
        total = sum(p.numel() for p in empty_model(args).parameters()) * 4
        assert world * (expected - norms) == total - norms


@pytest.mark.parametrize("world", [2, 4])
def test_each_rank_caches_only_its_key_value_heads(reports, world):
    args = tiny_args()
    replicas = max(1, world // args.n_kv_heads)
    for rank, rank_reports in enumerate(reports[world]):
        rep = rank_reports[0]
        n_layers, batch, window, kv_heads, head_dim = rep["cache_k_shape"]
        assert (n_layers, batch, window, head_dim) == (args.n_layers, 1, args.sliding_window, args.head_dim)
        assert kv_heads == rep["kv_heads"] == max(1, args.n_kv_heads // world)
        assert rep["kv_group"] == rank // replicas             # beyond K ranks, neighbours share a kv head


# ---------------------------------------------------------------------------------------------- communication


@pytest.mark.parametrize("world", [2, 4])
def test_counted_bytes_per_token_equal_the_formula(reports, world):
    args = tiny_args()
    L, d, V, b = args.n_layers, args.dim, args.vocab_size, 4  # float32 activations
    formula = comm_bytes_per_token(args, world, bytes_per_value=b)
    assert formula["all-reduce per layer"] == 2 * d * b
    assert formula["all-reduce"] == (2 * L + 1) * d * b          # two per block, one for the embedding
    assert formula["all-gather (logits)"] == V // world * b
    for rep in all_reports(reports, world)[:2]:
        decode = rep["decode"]                                   # one token of one sequence
        assert decode["all_reduce"] == {"calls": 2 * L + 1, "bytes": formula["all-reduce"]}
        assert decode["all_gather"] == {"calls": 1, "bytes": formula["all-gather (logits)"]}
        prefill = rep["prefill"]                                 # 11 tokens in chunks of W = 8: 2 forwards
        chunks = math.ceil(prefill["tokens"] / args.sliding_window)
        assert prefill["all_reduce"] == {"calls": chunks * (2 * L + 1), "bytes": prefill["tokens"] * formula["all-reduce"]}
        assert prefill["all_gather"] == {"calls": chunks, "bytes": chunks * formula["all-gather (logits)"]}
        whole = rep["whole_sequence"]                             # (2, SEQ_LEN): logits of every position
        assert whole["all_reduce"]["bytes"] == 2 * SEQ_LEN * formula["all-reduce"]
        assert whole["all_gather"]["bytes"] == 2 * SEQ_LEN * formula["all-gather (logits)"]


def test_dtensor_plan_computes_the_same_with_the_same_collectives(reports):
    """The explicit collectives against PyTorch's parallelize_module on 2 ranks: the same logits and the
    same collectives with the same sizes (counted where PyTorch dispatches them)."""
    for rank_reports in reports[2]:
        rep = rank_reports[0]
        dt = rep["dtensor"]
        assert "skipped" not in dt, dt
        assert dt["max_abs_vs_explicit"] <= 1e-6 * max(1.0, rep["max_ref"]), dt
        assert dt["max_abs_vs_single"] < 1e-5 * max(1.0, rep["max_ref"])
        assert dt["whole_sequence"] == rep["whole_sequence"]
        assert set(dt["whole_sequence"]) == {"all_gather", "all_reduce"}


# ---------------------------------------------------------------------------------------------- errors


def test_degrees_that_do_not_divide_the_heads_are_refused_by_name():
    m7 = ModelArgs.mistral_7b()
    assert valid_degrees(m7) == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match=r"degree 3 does not divide n_heads 32.*\[1, 2, 4, 8, 16, 32\]"):
        check_degree(m7, 3)
    with pytest.raises(ValueError, match=r"degree 64 > n_heads 32"):
        check_degree(m7, 64)
    with pytest.raises(ValueError, match=r"degree 4 does not divide n_kv_heads 6"):
        check_degree(m7.replace(n_heads=12, n_kv_heads=6, head_dim=64, dim=768), 4)
    with pytest.raises(ValueError, match=r"degree 12 > n_kv_heads 8 must be a multiple of 8"):
        check_degree(m7.replace(n_heads=24, dim=3072), 12)
    with pytest.raises(ValueError, match=r"does not divide vocab_size 32001"):
        check_degree(m7.replace(vocab_size=32001), 2)
    with pytest.raises(ValueError, match=r"does not divide hidden_dim 14337"):
        check_degree(m7.replace(hidden_dim=14337), 2)
    with pytest.raises(ValueError, match=r"int >= 1"):
        check_degree(m7, 0)


def test_beyond_n_kv_heads_key_value_heads_are_replicated():
    m7 = ModelArgs.mistral_7b()
    p8, p16 = Partition(m7, 8), Partition(m7, 16)
    assert (p8.heads, p8.kv_heads, p8.kv_replicas) == (4, 1, 1)
    assert (p16.heads, p16.kv_heads, p16.kv_replicas) == (2, 1, 2)
    assert [p16.kv_group(r) for r in range(16)] == [r // 2 for r in range(16)]
    # the query heads of every rank are served by the kv head it holds
    group = m7.n_heads // m7.n_kv_heads
    for r in range(16):
        heads = range(r * p16.heads, (r + 1) * p16.heads)
        assert {h // group for h in heads} == {p16.kv_group(r)}
    # wk/wv stop shrinking: 16 ranks hold as much of them as 8 ranks
    wk16, wk8 = p16.slice("layers.0.attention.wk.weight", 5), p8.slice("layers.0.attention.wk.weight", 2)
    assert wk16 == wk8 == (0, 256, 384)


def test_memory_and_traffic_arithmetic_for_7b():
    from mistral_nb.costs import kv_cache_bytes
    from mistral_nb.costs import weights_read_per_token
    from mistral_nb.parallel import memory_per_rank, rank_kv_cache_bytes, rank_weights_read_per_token

    m7 = ModelArgs.mistral_7b()
    assert rank_weights_read_per_token(m7, 1) == weights_read_per_token(m7)          # one rank: chapter 07's figure
    assert rank_kv_cache_bytes(m7, 1, 4096) == kv_cache_bytes(m7, 4096)
    rows = memory_per_rank(m7, [1, 2, 4, 8, 16])
    assert [r["weights"] for r in rows[:4]] == [independent_rank_bytes(m7, n, 2) for n in (1, 2, 4, 8)]
    assert rows[0]["weights"] == 2 * 7_241_732_096
    assert [r["kv cache"] for r in rows] == [kv_cache_bytes(m7, 4096) // min(n, 8) for n in (1, 2, 4, 8, 16)]
    assert rows[4]["weights"] == independent_rank_bytes(m7, 16, 2)                 # wk/wv replicated twice
    assert comm_bytes_per_token(m7, 1)["all-reduce"] == 0


class _Mesh:
    def __init__(self, n):
        self.n = n

    def size(self):
        return self.n


def test_dtensor_refuses_what_it_cannot_express():
    from mistral_nb import Transformer

    with torch.device("meta"):
        model = Transformer(tiny_args())                      # 2 kv heads
    with pytest.raises(ValueError, match="degree 4 > n_kv_heads 2 would need replicated"):
        parallelize_with_dtensor(model, _Mesh(4))
    with pytest.raises(ValueError, match="degree 3 does not divide n_heads 4"):
        parallelize_with_dtensor(model, _Mesh(3))


def test_loading_with_a_bad_degree_fails_before_reading(hf_pair):
    _, hf_dir, _ = hf_pair
    with pytest.raises(ValueError, match="degree 3 does not divide n_heads 4"):
        load_tensor_parallel(hf_dir, ThreadComm(ThreadHub(3, 5.0), 0))


def test_paged_block_table_frees_blocks_that_left_the_window():
    from mistral_nb.speed.paged import paged_block_table, paged_kv_tokens

    assert paged_block_table(14, 4, 8) == [None, 1, 2, 0]       # block 0 freed, its id reused for block 3
    assert paged_block_table(14, 4) == [0, 1, 2, 3]              # no window: nothing is freed
    for window, block in ((8, 4), (64, 16), (10, 3), (5, 8)):
        for n in list(range(0, 3 * window + 5)) + [10 * window + 1]:
            table = paged_block_table(n, block, window)
            assert len(table) == math.ceil(n / block)
            assert paged_kv_tokens(n, block, window) == block * sum(b is not None for b in table), (n, window, block)
            live = [b for b in table if b is not None]
            assert len(live) == len(set(live))                   # no physical block is used twice
            first_seen = max(0, n - window + 1)                  # every position the next token sees is kept
            assert all(table[p // block] is not None for p in range(first_seen, n))
    assert max(paged_kv_tokens(n, 16, 4096) for n in range(4000, 4300)) == 257 * 16    # ceil((W - 1) / 16) + 1
    assert paged_kv_tokens(4113, 16, 4096) == 16 * sum(b is not None for b in paged_block_table(4113, 16, 4096))


def test_one_rank_is_the_whole_model_bit_for_bit():
    from mistral_nb.parallel import SingleComm, random_model, shard_model

    model = random_model(tiny_args(), seed=3)
    tp = shard_model(model, SingleComm())
    tokens = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(tp(tokens), model(tokens))
    assert tp.parameter_bytes() == sum(p.numel() * 4 for p in model.parameters())
    assert generate(tp, PROMPTS, max_new_tokens=6) == generate(model, PROMPTS, max_new_tokens=6)


def test_a_non_finite_weight_in_a_rank_slice_is_named(tmp_path):
    from mistral_nb import save_checkpoint
    from mistral_nb.parallel import random_model

    model = random_model(tiny_args(), seed=0)
    with torch.no_grad():
        model.layers[1].feed_forward.w2.weight[3, 100] = float("nan")     # column 100: rank 1 of 2 (64 each)
    save_checkpoint(model, tmp_path / "bad", layout="mistral")
    hub = ThreadHub(2, 5.0)
    load_tensor_parallel(tmp_path / "bad", ThreadComm(hub, 0))           # rank 0's slice is clean
    with pytest.raises(CheckpointError, match=r"'layers.1.feed_forward.w2.weight' \(the piece \(1, 64, 128\) rank 1 "
                                              r"reads\) holds nan at index \(3, 36\)"):
        load_tensor_parallel(tmp_path / "bad", ThreadComm(hub, 1))


# ---------------------------------------------------------------------------------------------- launching


def _fail_on_rank_1(comm):
    if comm.rank == 1:
        raise ValueError("deliberate failure on rank 1")
    comm.all_reduce(torch.ones(3))                            # rank 0 waits for rank 1, which never comes
    return comm.rank


def _hang_on_rank_0(comm):
    if comm.rank == 0:
        time.sleep(600)
    return comm.rank


def test_a_failing_rank_stops_the_run_and_names_itself():
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 failed:(.|\n)*deliberate failure on rank 1"):
        launch(_fail_on_rank_1, 2, timeout=120, mode="processes")
    assert time.monotonic() - t0 < 60
    assert multiprocessing.active_children() == []             # nobody left waiting in the all-reduce


def test_a_hanging_rank_is_stopped_at_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 5 s"):
        launch(_hang_on_rank_0, 2, timeout=5, mode="processes")
    assert time.monotonic() - t0 < 20
    assert multiprocessing.active_children() == []


def test_ranks_that_finish_at_once_do_not_break_a_slower_rank_setting_up():
    """Regression: a rank with nothing to do used to close its gloo connections while the other was
    still connecting ("Connection closed by peer"), about one launch in six on a busy machine."""
    for _ in range(8):
        assert launch(_identity, 2, timeout=60, mode="processes") == ([0, 1], "processes")
    assert multiprocessing.active_children() == []


def test_threads_give_the_same_results_as_processes(reports):
    """The in-process fallback (ranks as threads) against the 4-process run of the same random model."""
    source = mha_source(tiny_args())
    results, how = launch(check_parity, 4, (source, PROMPTS), dict(max_new_tokens=NEW_TOKENS, seq_len=SEQ_LEN),
                          mode="threads", timeout=TIMEOUT)
    assert how == "threads"
    for thread_rep, rank_reports in zip(results, reports[4]):
        proc_rep = rank_reports[2]
        assert thread_rep["tokens_tp"] == proc_rep["tokens_tp"] == proc_rep["tokens_single"]
        assert thread_rep["decode"] == proc_rep["decode"] and thread_rep["prefill"] == proc_rep["prefill"]
        assert thread_rep["max_abs"] < 1e-5 * max(1.0, thread_rep["max_ref"])
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 failed(.|\n)*deliberate failure"):
        launch(_fail_on_rank_1, 2, mode="threads", timeout=30)


def test_auto_falls_back_to_threads_when_processes_cannot_start(monkeypatch):
    import mistral_nb.parallel.launcher as par

    def refuse(*a, **k):
        raise par._StartupError("no processes here")

    monkeypatch.setattr(par, "_run_processes", refuse)
    assert launch(_identity, 2, mode="auto") == ([0, 1], "threads")
    with pytest.raises(par._StartupError):
        launch(_identity, 2, mode="processes")


def _identity(comm):
    return comm.rank


# ---------------------------------------------------------------------------------------------- torchrun


def test_torchrun_entry_point_generates_what_one_process_generates(hf_pair):
    _, hf_dir, _ = hf_pair
    expected = generate(load_model(hf_dir), [[1, 5, 9]], max_new_tokens=6)[0]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mistral_nb.parallel", str(hf_dir), "--tokens", "1,5,9", "--max-new-tokens", "6"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 processes did not finish within 180 s")
    assert proc.returncode == 0, out
    tokens = re.search(r"^tokens: (.*)$", out, flags=re.M)
    assert tokens, out
    assert [int(t) for t in tokens.group(1).split(",")] == expected
    held = [int(n.replace(",", "")) for n in re.findall(r"^rank \d: ([\d,]+) bytes of weights held", out, flags=re.M)]
    assert held == [rank_parameter_bytes(tiny_args(), 2, 4)] * 2, out


def test_pass_times_compare_compute_with_the_all_reduces_on_a_link():
    from mistral_nb.costs import decode_cost
    from mistral_nb.parallel import rank_pass_seconds, rank_weights_read_per_token, ring_all_reduce_bytes
    from mistral_nb.speed.roofline import H100_SXM_BF16 as h100, NVLINK_H100, PCIE5_X16

    m7 = ModelArgs.mistral_7b()
    one = rank_pass_seconds(m7, 8, 1, h100, NVLINK_H100.bandwidth)
    assert one["compute"] == pytest.approx(rank_weights_read_per_token(m7, 8) / h100.bandwidth, rel=1e-3)   # memory-bound
    assert one["all-reduce"] == ring_all_reduce_bytes(65 * 4096 * 2, 8) / 450e9
    big = rank_pass_seconds(m7, 8, 8192, h100, NVLINK_H100.bandwidth)
    assert big["compute"] == pytest.approx(decode_cost(m7, batch=8192).flops / 8 / h100.peak_flops)      # compute-bound
    assert 1 < big["all-reduce"] / big["compute"] < 1.3               # TP = 8 over NVLink: about the compute time
    pcie = rank_pass_seconds(m7, 8, 8192, h100, PCIE5_X16.bandwidth)
    assert pcie["all-reduce"] / big["all-reduce"] == pytest.approx(450 / 64)
    two = rank_pass_seconds(m7, 2, 8192, h100, NVLINK_H100.bandwidth)
    assert two["all-reduce"] < 0.2 * two["compute"]                   # fewer ranks: more compute per byte sent
    with pytest.raises(ValueError, match="tokens must be an int >= 1"):
        rank_pass_seconds(m7, 8, 0, h100, NVLINK_H100.bandwidth)
    with pytest.raises(ValueError, match="link_bandwidth"):
        rank_pass_seconds(m7, 8, 1, h100, 0)


def _sample_on_ranks(comm, args, seed_per_rank):
    from mistral_nb.parallel import random_model, shard_model

    tp = shard_model(random_model(args, 0), comm)
    seed = 7 + comm.rank if seed_per_rank else 7
    return generate(tp, [[1, 5, 9]], max_new_tokens=12, temperature=1.0, seed=seed)[0]


def test_sampling_ranks_agree_only_with_a_shared_seed():
    from mistral_nb.parallel import launch

    (a, b), _ = launch(_sample_on_ranks, 2, (tiny_args(), False), {}, mode="threads")
    assert a == b
    (c, d), _ = launch(_sample_on_ranks, 2, (tiny_args(), True), {}, mode="threads")
    assert c != d


def test_the_cli_shares_one_seed_among_the_ranks(monkeypatch):
    import torch.distributed as dist

    from mistral_nb.parallel.cli import shared_seed

    assert shared_seed(5) == 5                                        # a given seed is used as it is
    sent = []
    monkeypatch.setattr(dist, "broadcast_object_list", lambda box, src: sent.append((list(box), src)))
    seed = shared_seed(None)
    assert sent == [([seed], 0)] and 0 <= seed < 2**31              # drawn once, broadcast from rank 0
