"""Worker processes for the pooled verbs (vote, propagate's flow backend, evaluate, audit).

Why not ``multiprocessing.Pool``: when the OOM killer SIGKILLs one of its workers, the
parent waits forever for the lost task (issue 11: a ``vote`` hung at 15/16 videos), and
``concurrent.futures.ProcessPoolExecutor`` fails every pending task without saying which
one the dead worker held. Here each worker holds one job at a time over its own pipe, so
the parent knows exactly what a dead worker was doing and fails the stage naming it.
Workers also die with their parent (:mod:`.parentdeath`): a SIGKILLed stage
leaves nothing running that could still write into its staging folder.

:func:`imap` yields the results in job order, like ``Pool.imap``; an exception raised
by a job is re-raised in the parent (a :class:`~rvos_kit.errors.KitError` as itself).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait

from ..errors import KitError
from .parentdeath import die_with_parent


def _worker(func, conn, parent: int) -> None:
    die_with_parent(parent, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        i, job = msg
        try:
            conn.send((i, True, func(job)))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            try:
                conn.send((i, False, e))
            except Exception:  # an exception that does not pickle
                conn.send((i, False, RuntimeError(traceback.format_exc())))


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the out-of-memory killer sends it)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode}"


def imap(
    func: Callable,
    jobs: Iterable,
    workers: int,
    describe: Callable[[object], str] = lambda job: "a job",
) -> Iterator:
    """``func(job)`` for every job in ``workers`` processes; results in job order.

    ``func`` must be a module-level function (it is pickled under ``spawn``);
    ``describe(job)`` names a job in the error raised when its worker dies."""
    jobs = list(jobs)
    if not jobs:
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs, conns, held = [], [], {}  # held: worker index -> job index
    try:
        for _ in range(min(workers, len(jobs))):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(func, child_end, os.getpid()), daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        todo = iter(range(len(jobs)))

        def feed(w: int) -> None:
            i = next(todo, None)
            if i is None:
                conns[w].send(None)
                held.pop(w, None)
            else:
                held[w] = i
                conns[w].send((i, jobs[i]))

        for w in range(len(procs)):
            feed(w)
        done: dict[int, object] = {}
        next_out = 0
        active = set(range(len(procs)))
        while next_out < len(jobs):
            ready = set(wait([x for w in active for x in (conns[w], procs[w].sentinel)]))
            for w in sorted(active):
                p, c = procs[w], conns[w]
                if c in ready or (p.sentinel in ready and c.poll()):
                    try:
                        i, ok, value = c.recv()
                    except EOFError:
                        ready.add(p.sentinel)
                    else:
                        if not ok:
                            raise value
                        done[i] = value
                        feed(w)
                        continue
                if p.sentinel in ready:
                    p.join(timeout=5)
                    if w in held:
                        raise KitError(
                            f"a worker process {_how(p.exitcode)} while working on "
                            f"{describe(jobs[held[w]])}; the output was not changed. Run "
                            "again (with fewer --workers if memory is short)"
                        )
                    active.discard(w)
            if not active and next_out < len(jobs) and next_out not in done:
                raise KitError("internal error: every worker exited with jobs left")
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join()
        for c in conns:
            c.close()
