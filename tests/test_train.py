"""The training loop, the key-recall task and the probes of chapter 11 (small and fast: CPU, seconds)."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mistral_nb import ModelArgs, viz  # noqa: E402
from mistral_nb.masks import receptive_field, sliding_window_mask  # noqa: E402
from mistral_nb.training.tasks import KeyRecall, accuracy_by_distance, distances, key_influence_by_distance
from mistral_nb.evals.heads import attention_maps, hop_path
from mistral_nb.training.loop import IGNORE, lr_at, seeded_model, train  # noqa: E402

TASK = KeyRecall(n_keys=8, n_noise=8, seq_len=12, max_key_pos=2)        # distances 1 .. 9


def tiny(task=TASK, **kw):
    base = dict(dim=32, n_layers=1, head_dim=8, hidden_dim=64, n_heads=4, n_kv_heads=2,
                vocab_size=task.vocab_size, sliding_window=4)
    base.update(kw)
    return ModelArgs(**base)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def trained():
    """One layer, W = 4 (reach 3), trained on the dense task: (model, history)."""
    model = seeded_model(tiny(), seed=0)
    history = train(model, TASK.batches(32), steps=100, lr=1e-2, warmup=10, seed=0, progress=False)
    return model, history


# ------------------------------------------------------------------ data


@pytest.mark.parametrize("query", [False, True])
def test_batches_are_deterministic_and_well_formed(query):
    task = KeyRecall(n_keys=8, n_noise=8, seq_len=12, max_key_pos=2, query=query)
    a = task.sample(64, torch.Generator().manual_seed(3))
    b = task.sample(64, torch.Generator().manual_seed(3))
    c = task.sample(64, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.tokens, c.tokens)
    rows = torch.arange(64)
    keys = a.tokens[rows, a.key_pos]
    assert ((keys >= task.n_noise) & (keys < task.n_noise + task.n_keys)).all()
    # exactly one key per sequence; everything else noise (or the final query mark)
    is_key = (a.tokens >= task.n_noise) & (a.tokens < task.query_id)
    assert is_key.sum(1).eq(1).all()
    assert int(a.tokens.max()) < task.vocab_size
    d = distances(a.key_pos, task.seq_len)
    scored = a.targets != IGNORE
    if query:
        assert (a.tokens[:, -1] == task.query_id).all()
        assert scored[:, :-1].sum() == 0 and scored[:, -1].all()
        assert a.key_pos.max() <= task.seq_len - 2
    else:
        assert torch.equal(scored, d >= 1)
        assert a.key_pos.max() <= task.max_key_pos
    assert (a.targets[scored] == keys[:, None].expand_as(a.targets)[scored]).all()


def test_loss_floor_counts_out_of_reach_questions():
    # dense: key at 0, 1 or 2 in 12 tokens -> 11 + 10 + 9 = 30 questions; reach 3 -> 8 + 7 + 6 = 21 beyond
    assert TASK.out_of_reach_fraction(3) == pytest.approx(21 / 30)
    assert TASK.loss_floor(3) == pytest.approx(21 / 30 * math.log(8))
    assert TASK.loss_floor(None) == 0.0 and TASK.loss_floor(100) == 0.0
    q = KeyRecall(n_keys=8, n_noise=8, seq_len=12, query=True)
    assert q.out_of_reach_fraction(3) == pytest.approx(8 / 11)
    with pytest.raises(ValueError, match="max_key_pos"):
        KeyRecall(seq_len=10, max_key_pos=9)


# ------------------------------------------------------------------ training loop


def test_lr_schedule_warms_up_then_follows_a_cosine():
    lrs = [lr_at(s, 100, 1.0, 10, min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[9 + 45] == pytest.approx(0.55, abs=0.02)         # halfway down the cosine


def test_loss_goes_down_and_is_reproducible():
    runs = []
    for _ in range(2):
        model = seeded_model(tiny(), seed=1)
        runs.append(train(model, TASK.batches(16), steps=30, lr=1e-2, warmup=3, seed=5, progress=False))
    assert runs[0].loss == runs[1].loss                          # same seed, same machine: same numbers
    assert len(runs[0].loss) == 30 and len(runs[0].lr) == 30
    first, last = runs[0].loss[0], sum(runs[0].loss[-5:]) / 5
    assert first == pytest.approx(math.log(TASK.vocab_size), abs=0.5)   # starts near a uniform guess
    assert last < first - 0.5
    other = train(seeded_model(tiny(), seed=1), TASK.batches(16), steps=3, lr=1e-2, warmup=1, seed=6,
                  progress=False)
    assert other.loss[1:] != runs[0].loss[1:3]                   # another data seed, other batches


def test_clipping_bounds_the_update():
    model = seeded_model(tiny(), seed=2)
    h = train(model, TASK.batches(8), steps=2, lr=1e-3, warmup=0, clip=1e-6, seed=0, progress=False)
    assert all(g > 1e-6 for g in h.grad_norm)                    # recorded before clipping
    with pytest.raises(ValueError, match="warmup"):
        train(model, TASK.batches(8), steps=5, warmup=5, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train(model, TASK.batches(8), steps=0, progress=False)


def test_trained_model_beats_chance_within_reach_only(trained):
    model, history = trained
    reach = receptive_field(1, 4)                                 # 3
    assert sum(history.loss[-20:]) / 20 < TASK.loss_floor(reach) + 0.25
    res = accuracy_by_distance(model, TASK, n_sequences=512, seed=0)
    acc = res["accuracy"]
    assert res["distance"] == list(range(1, TASK.max_distance + 1)) and set(res["count"]) == {512}
    assert min(acc[:reach]) > 0.9                                 # within one window: recalled
    assert max(acc[reach:]) < 0.3                                 # beyond it: a guess (chance 1/8)


def test_weight_decay_skips_norm_gains(trained):
    from mistral_nb.training.loop import param_groups

    model, _ = trained
    groups = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert len(groups[1]["params"]) == 2 * model.args.n_layers + 1


# ------------------------------------------------------------------ probes


@pytest.mark.parametrize("seq_len", [6, 12])    # 12 >= 2 W: the model's banded path
def test_attention_maps_reproduce_each_layer(seq_len):
    args = tiny(n_layers=2, sliding_window=4)
    model = seeded_model(args, seed=3).eval()
    tokens = torch.randint(0, args.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(0))
    maps = attention_maps(model, tokens)                          # (L, B, H, S, S)
    assert maps.shape == (2, 2, 4, seq_len, seq_len)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 4, seq_len))
    assert (maps[..., ~sliding_window_mask(seq_len, 4)] == 0).all()
    # weights @ v, through wo, is what each attention module returned in the forward pass
    outs, ins = [], []

    def keep(module, args, out):
        ins.append(args)
        outs.append(out)

    hooks = [layer.attention.register_forward_hook(keep) for layer in model.layers]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    for layer, attn in enumerate(m.attention for m in model.layers):
        with torch.no_grad():
            _, _, v = attn.project(*ins[layer][:3])
            v = v.transpose(1, 2).repeat_interleave(args.n_rep, dim=1)             # (B, H, S, D)
            mixed = (maps[layer] @ v).transpose(1, 2).reshape(2, seq_len, -1)
            assert torch.allclose(attn.wo(mixed), outs[layer], atol=1e-5)


def test_key_influence_stops_at_the_receptive_field():
    task = KeyRecall(n_keys=8, n_noise=8, seq_len=14, max_key_pos=2)
    model = seeded_model(tiny(task, n_layers=2, sliding_window=3), seed=4)
    infl = key_influence_by_distance(model, task, n_sequences=32, seed=0)      # (3, 12)
    assert infl.shape == (3, task.max_distance + 1)
    assert infl[0, 0] > 0 and (infl[0, 1:] == 0).all()              # embeddings: only the key itself
    for layer in (1, 2):
        reach = receptive_field(layer, 3)
        assert (infl[layer, :reach + 1] > 0).all()
        assert (infl[layer, reach + 1:] == 0).all()


def test_hop_path_follows_the_strongest_links():
    S = 8
    maps = torch.zeros(2, 2, S, S)
    maps[1, 1, 7, 4] = 0.9      # layer 2: query 7 reads position 4 (in head 1)
    maps[1, 0, 7, 6] = 0.5
    maps[0, 0, 4, 1] = 0.8      # layer 1: position 4 reads position 1
    path, weights = hop_path(maps, 7)
    assert path == [1, 4, 7]
    assert weights == pytest.approx([0.8, 0.9])


def test_figures_draw(trained):
    model, history = trained
    ax = viz.plot_loss_curve(history.smoothed(10), every=10, floor=TASK.loss_floor(3))
    assert len(ax.lines) == 2
    res = accuracy_by_distance(model, TASK, n_sequences=64)
    ax = viz.plot_recall_by_distance([{"label": "L=1, W=4", **res, "reach": 3},
                                      {"label": "full", **res, "reach": None}], chance=TASK.chance)
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["L=1, W=4", "full"]
    b = TASK.sample(1, torch.Generator().manual_seed(0))
    maps = attention_maps(model, b.tokens)[:, 0]
    labels = TASK.labels(b.tokens[0])
    axes = viz.plot_attention_layers(maps, labels, window=4, key_pos=int(b.key_pos[0]), positions=(0, 10))
    assert axes.shape == (1, 4)
    assert [t.get_text() for t in axes[0, 0].get_yticklabels()] == labels[:10]
    infl = key_influence_by_distance(model, TASK, n_sequences=16)
    ax = viz.plot_key_influence(infl, window=4)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["embeddings", "after layer 1"]
    path, weights = hop_path(maps, 9)
    ax = viz.plot_hop_path(path, labels, window=4, weights=weights, key_pos=int(b.key_pos[0]))
    assert len(ax.texts) == 2                                     # the arrow and its weight


def test_query_task_is_scored_at_every_distance_equally():
    task = KeyRecall(n_keys=8, n_noise=8, seq_len=10, query=True)
    model = seeded_model(tiny(task), seed=0)
    res = accuracy_by_distance(model, task, n_sequences=8, seed=0, batch_size=20)
    assert res["distance"] == list(range(1, 10)) and res["count"] == [8] * 9
    for shift, expected in ((0, 1.0), (1, 0.0)):    # a model that names the planted key (shift 0), or the next one
        oracle = accuracy_by_distance(_KeyOracle(task, shift), task, n_sequences=8, seed=0, batch_size=20)
        assert oracle["accuracy"] == [expected] * 9 and oracle["count"] == [8] * 9


class _KeyOracle(torch.nn.Module):
    """Logits that put all weight, at every position, on the key planted in the row (shifted by ``shift`` keys)."""

    def __init__(self, task, shift):
        super().__init__()
        self.task, self.shift = task, shift

    def forward(self, tokens):
        t = self.task
        B, S = tokens.shape
        is_key = (tokens >= t.n_noise) & (tokens < t.n_noise + t.n_keys)
        key = torch.where(is_key, tokens, 0).max(-1).values                      # (B,) one key per row
        named = t.n_noise + (key - t.n_noise + self.shift) % t.n_keys
        logits = torch.zeros(B, S, t.vocab_size)
        logits[torch.arange(B)[:, None], torch.arange(S)[None, :], named[:, None]] = 1.0
        return logits
