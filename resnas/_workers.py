"""Where ``--jobs`` workers come from; light to import (no torch), so that the command line
can start the worker server before it imports anything heavy itself."""

from __future__ import annotations

import multiprocessing

# What a worker imports before its first trial, imported once by the server the workers are
# forked from (``worker_context``): torch, resnas, and ``torch._dynamo``, which the first
# ``torch.optim`` call imports; together about 3 s of every worker's start otherwise.
WORKER_PRELOAD = (
    "torch",
    "torch._dynamo",
    "torch.utils.flop_counter",
    "resnas.search._optuna",
    "resnas.search._objective",
    "resnas.data",
)


def worker_context():
    """Where ``--jobs`` workers come from. On Linux (and wherever ``forkserver`` exists) they
    are forked from a server process that imported ``WORKER_PRELOAD`` once, so that a worker
    starts its first trial at once instead of importing torch and resnas again; the server is
    a fresh single-threaded interpreter that runs nothing else, so forking it is safe. Elsewhere
    (Windows) they are spawned. The first call starts the server; call it early
    (``start_worker_server``) and its imports overlap the parent's own start."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


def start_worker_server() -> None:
    """Start the server ``--jobs`` workers are forked from now, so that its imports run while
    this process does its own; harmless where there is none."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def stop_worker_server() -> None:
    """End the server the workers were forked from, if this process started one (its workers
    have ended, or go on without it). Left alone it outlives this process by its own exit,
    torch's teardown, about a second, and holds this process's output open meanwhile: whatever
    reads it (``| tee``, a script's subprocess) would wait that second for the end."""
    import sys

    forkserver = sys.modules.get("multiprocessing.forkserver")
    pid = None if forkserver is None else getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None:
        return
    import os
    import signal

    try:
        os.kill(pid, signal.SIGTERM)  # its default action: it ignores only SIGINT
    except OSError:  # gone already
        pass
