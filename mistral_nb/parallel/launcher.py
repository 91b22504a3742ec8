"""Running n ranks: CPU processes joined in a gloo process group, or threads of this process.

``launch(fn, n)`` calls ``fn(comm, *args, **kwargs)`` on every rank and returns their results.
Processes need ``fn`` and its arguments to be picklable (a function of an importable module); where
they are not, or where processes cannot be started, ``mode="auto"`` runs the ranks as threads with
``ThreadComm``. Every run is bounded by a timeout, and a failing rank stops the others.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from typing import Callable, Optional, Sequence, Tuple

import torch

from .comm import DistComm, ThreadComm, ThreadHub



# ================================================================ running n ranks
def free_threads() -> None:
    torch.set_num_threads(1)        # n processes on a few cores: one thread each


def _process_main(fn, rank, world, store, conn, args, kwargs, timeout):
    free_threads()
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
    except BaseException:
        conn.send(("init-error", traceback.format_exc()))
        return
    try:
        result = fn(DistComm(), *args, **kwargs)
        conn.send(("ok", pickle.dumps(result)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return                                    # the parent stops the other ranks
    conn.close()
    try:
        # A rank that is done must not close its connections while another is still setting its own
        # up (gloo then fails with "Connection closed by peer"): wait for all, then leave together.
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass


class _StartupError(RuntimeError):
    """The processes or their process group could not be set up (as opposed to fn failing)."""


def _mp_context():
    """Fresh processes that do not inherit this one's threads: a fork server that has imported torch
    once (each rank then starts in a fraction of a second), or plain spawn where there is none."""
    import multiprocessing as mp

    try:
        ctx = mp.get_context("forkserver")
    except ValueError:                       # e.g. Windows
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(["torch", "torch.distributed", __name__])
    return ctx


def _run_processes(fn, world, args, kwargs, timeout):
    from multiprocessing.connection import wait

    ctx = _mp_context()
    tmp = tempfile.mkdtemp(prefix="mistral_nb_tp_")
    procs, readers = [], {}
    try:
        try:
            for rank in range(world):
                reader, writer = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_process_main, args=(fn, rank, world, os.path.join(tmp, "store"), writer,
                                                            args, kwargs, timeout), daemon=True)
                p.start()
                writer.close()                      # the child holds the only writing end
                procs.append(p)
                readers[reader] = rank
        except (OSError, RuntimeError, ValueError) as e:
            raise _StartupError(f"could not start {world} processes: {e!r}") from e
        results: dict = {}
        deadline = time.monotonic() + timeout
        while len(results) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = sorted(set(range(world)) - set(results))
                raise TimeoutError(f"tensor-parallel run on {world} processes: ranks {waiting} did not finish "
                                   f"within {timeout:g} s; all ranks were terminated")
            for reader in wait([r for r, rank in readers.items() if rank not in results], timeout=left):
                rank = readers[reader]
                try:
                    status, payload = reader.recv()
                except EOFError:
                    procs[rank].join(1)
                    raise RuntimeError(f"tensor-parallel run: rank {rank} of {world} exited (code "
                                       f"{procs[rank].exitcode}) without a result; all ranks were terminated") from None
                if status == "init-error":
                    raise _StartupError(f"rank {rank} could not join the gloo process group:\n{payload}")
                if status == "error":
                    raise RuntimeError(f"tensor-parallel run: rank {rank} of {world} failed:\n{payload}")
                results[rank] = pickle.loads(payload)
        for p in procs:                             # let them exit on their own (their cleanup runs)
            p.join(max(1.0, deadline - time.monotonic()))
        return [results[r] for r in range(world)]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():       # pragma: no cover - a process that ignores SIGTERM
                p.kill()
                p.join(5)
        for reader in readers:
            reader.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _run_threads(fn, world, args, kwargs, timeout):
    hub = ThreadHub(world, timeout)
    results: list = [None] * world
    errors: list = [None] * world

    def body(rank):
        try:
            results[rank] = fn(ThreadComm(hub, rank), *args, **kwargs)
        except BaseException:
            errors[rank] = traceback.format_exc()
            hub.barrier.abort()                 # wake the other ranks instead of leaving them waiting

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        hub.barrier.abort()
        raise TimeoutError(f"tensor-parallel run on {world} threads did not finish within {timeout:g} s")
    failed = [r for r, e in enumerate(errors) if e is not None and "BrokenBarrierError" not in e.splitlines()[-1]]
    failed = failed or [r for r, e in enumerate(errors) if e is not None]
    if failed:
        raise RuntimeError(f"tensor-parallel run: rank {failed[0]} of {world} failed:\n{errors[failed[0]]}")
    return results


def launch(fn: Callable, world: int, args: Sequence = (), kwargs: Optional[dict] = None,
           timeout: float = 120.0, mode: str = "auto") -> Tuple[list, str]:
    """Run ``fn(comm, *args, **kwargs)`` on ``world`` ranks; return ([rank 0's result, ...], how).

    mode ``"processes"``: start ``world`` CPU processes joined in a gloo process group (``fn`` and its
    arguments must be picklable: a function of an importable module). ``"threads"``: run the ranks as
    threads of this process with ``ThreadComm``. ``"auto"``: processes, or threads when ``fn`` or its
    arguments cannot be pickled or the processes or their process group cannot be set up (``how``
    says which ran).
    Bounded: after ``timeout`` seconds every rank is stopped and TimeoutError raised; when a rank
    fails, the others are stopped and RuntimeError carries the rank's traceback.
    """
    if mode not in ("auto", "processes", "threads"):
        raise ValueError(f"mode must be 'auto', 'processes' or 'threads', got {mode!r}")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")
    _check_launch_args(fn, args, kwargs, timeout)
    kwargs = kwargs or {}
    if mode != "threads":
        problem = _unpicklable(fn, args, kwargs)
        if problem and mode == "processes":
            raise ValueError(f"mode='processes' needs fn and its arguments to be picklable: {problem}")
        if not problem:
            try:
                return _run_processes(fn, world, args, kwargs, timeout), "processes"
            except _StartupError:
                if mode == "processes":
                    raise
    return _run_threads(fn, world, args, kwargs, timeout), "threads"


def _check_launch_args(fn, args, kwargs, timeout) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(comm, *args, **kwargs), got {type(fn).__name__}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple of fn's arguments after comm, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a dict or None, got {type(kwargs).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")


def _unpicklable(fn, args, kwargs) -> Optional[str]:
    """Why ``fn``, ``args`` or ``kwargs`` cannot be sent to another process (None when they can)."""
    try:
        pickle.dumps((fn, tuple(args), kwargs))
    except Exception as e:          # PicklingError, AttributeError (a local function), TypeError (a lock)
        return f"{type(e).__name__}: {e}"
    return None
