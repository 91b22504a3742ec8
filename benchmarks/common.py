"""Shared helpers for the benchmark scripts: machine description, timing, result recording."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mistral_nb.book.results import machine_info  # noqa: E402

RESULTS = Path(__file__).parent / "results"


machine = machine_info          # what the numbers were measured on


def command() -> str:
    """The command line that produced the result, relative to the repository root."""
    return "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}"] + sys.argv[1:])


def timed(fn, sync=None) -> float:
    """Wall time of one call of ``fn`` in seconds (CUDA-synchronised when on a GPU)."""
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t0


def interleaved_medians(fns: dict, repeats: int, warmup: int = 1, sync=None) -> dict:
    """Run every function ``repeats`` times, interleaved (a, b, a, b, ...) so that background load
    hits all of them alike; return {name: {"median_s", "all_s"}}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, sync))
    return {name: {"median_s": statistics.median(t), "all_s": [round(x, 5) for x in t]} for name, t in times.items()}


def record(name: str, result: dict) -> Path:
    """Write ``result`` with the machine and command to benchmarks/results/NAME.json."""
    RESULTS.mkdir(exist_ok=True)
    out = {"command": command(), "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"recorded {path.relative_to(Path(__file__).parent.parent)}")
    return path


class PeakRSS:
    """Context manager sampling this process's resident memory (every ``interval`` s) in a thread.

    ``peak_increase`` is the highest RSS seen inside the block minus the RSS on entry, in bytes.
    (ru_maxrss cannot serve here: it is a high-water mark over the whole process life.)
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak_increase = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import threading

        self.start = self.rss()
        self.peak = self.start
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        self.peak_increase = self.peak - self.start
        return False
