"""Rehearsal of chapter 15's GPU cells: the cells tagged `gpu` are executed as written, on a CPU, with
`cuda_or_explain` answering yes, `load_pretrained` giving a small random Mistral with int8 blocks in
float16, and `datasets.load_dataset` a stand-in chat dataset with the columns of HuggingFaceH4/no_robots
(system prompts, several turns, one conversation the v1 format cannot encode)."""

from pathlib import Path

import nbformat
import pytest
import torch

from helpers import random_model, tiny_args

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "15_base_to_instruct.ipynb"
ROWS = [
    {"prompt": "Name a colour.", "category": "Brainstorm",
     "messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal."}]},
    {"prompt": "Be brief.", "category": "Chat",
     "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                  {"role": "assistant", "content": "Goodbye."}]},
    {"prompt": "Two users", "category": "Chat",       # two user turns in a row: not the v1 format, skipped
     "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                  {"role": "assistant", "content": "c"}]},
] * 4


def gpu_cells():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    setup = [c.source for c in nb.cells if c.cell_type == "code" and "COLAB = dict(" in c.source]
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "gpu" in c.get("metadata", {}).get("tags", [])]
    return setup, cells


def test_the_gpu_cells_fine_tune_and_chat_on_a_stand_in(monkeypatch, tmp_path, capsys):
    import datasets  # required by requirements.txt: a broken install must fail, not skip
    import mistral_nb.checkpoint.hub as hub
    from mistral_nb.speed.int8 import quantize_model

    calls = {}

    def fake_pretrained(repo, quantize="auto", **kw):
        calls["repo"], calls["quantize"] = repo, quantize
        model = random_model(tiny_args(vocab_size=32000), seed=0)
        return quantize_model(model.to(torch.float16))             # a T4: int8 blocks, float16 rest

    def fake_dataset(name, split):
        calls["dataset"], calls["split"] = name, split
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(hub, "cuda_or_explain", lambda: True)
    monkeypatch.setattr(hub, "load_pretrained", fake_pretrained)
    monkeypatch.setattr(datasets, "load_dataset", fake_dataset)
    monkeypatch.chdir(tmp_path)
    setup, cells = gpu_cells()
    assert len(setup) == 1 and len(cells) == 4
    namespace = {"torch": torch}
    exec(setup[0], namespace)
    namespace["COLAB"].update(rows=len(ROWS), seq_len=64, batch_size=2, steps=3, lr=1e-3)
    for source in cells:
        exec(source, namespace)
    out = capsys.readouterr().out
    assert calls == {"repo": "mistralai/Mistral-7B-v0.1", "quantize": "int8", "dataset": "HuggingFaceH4/no_robots",
                     "split": f"train[:{len(ROWS)}]"}
    big = namespace["big"]
    assert big.checkpointing and big.lora_config.targets == ("wq", "wv")
    assert f"8 of {len(ROWS)} conversations fit" in out and "tuned:" in out
    assert len(namespace["history"].loss) == 3 and all(torch.isfinite(torch.tensor(namespace["history"].loss)))
    assert (tmp_path / "mistral-7b-no-robots-lora" / "adapter_model.safetensors").is_file()
    moved = max(layer.lora_B.weight.abs().max().item() for layer in (big.layers[0].attention.wq, big.layers[0].attention.wv))
    assert moved > 0                                               # the scaled float16 steps did update the adapters
