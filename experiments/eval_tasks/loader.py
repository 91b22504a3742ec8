"""lm-eval's ``custom_dataset`` for the task files of this folder: each split from a jsonl file here.

lm-eval calls ``load(**metadata, **dataset_kwargs)`` (``ConfigurableTask.download``); the YAML files
name the files in ``dataset_kwargs.data_files``, relative to this folder, so the tasks run from any
working directory (``lm_eval --include_path experiments/eval_tasks``).
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_files: dict, **_metadata):
    import datasets

    out = {}
    for split, name in data_files.items():
        lines = (HERE / name).read_text(encoding="utf-8").splitlines()
        out[split] = datasets.Dataset.from_list([json.loads(line) for line in lines if line.strip()])
    return out
