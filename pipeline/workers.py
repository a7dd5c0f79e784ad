"""Local worker processes that never outlive the command that started them.

Every process pool of the toolkit (``perturb``'s shards, ``selectivity``'s feature analysis,
the listening page's thumbnails) is made here, so one rule holds for all of them:

- **A worker ends with its parent.** A pool worker blocks on its task queue, which its
  siblings keep open, so it would never notice that the command died (SIGKILL included) and
  would wait, or finish a shard behind the back of the run that resumes. Each worker runs a
  watchdog thread that ends it as soon as the parent process has ended (a pidfd on Linux,
  a poll elsewhere).
- **Ctrl-C stops the command, not the workers one by one.** Workers ignore SIGINT (a
  terminal sends it to the whole process group); the parent, on any exception leaving the
  pool (KeyboardInterrupt included), cancels the queued tasks and terminates the workers
  instead of waiting for the queue to drain.
- **No worker is forked from the command itself.** By then the command runs threads:
  zarr's event loop (started by the first array read), BLAS thread pools. ``fork()``
  copies the process without them but with every lock they held at that instant, so a
  child can block for ever on one (zarr resets its own loop in a forked child; nothing
  resets the others), and Python 3.12 warns about forking a threaded process. Workers
  start from a fork server (:data:`START_METHOD`): a fresh single-threaded interpreter,
  with the modules a pool names in ``preload`` imported once; each worker is forked from
  it in milliseconds, where ``spawn`` (the fallback where there is no fork server:
  Windows) pays every import again in every worker. Python 3.14 makes the same choice
  as its default on Linux.

Every ``ProcessPoolExecutor`` and start method of the toolkit, its studies and benchmarks
is here (a layout test, ``tests/test_layout.py``, keeps it so).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

# The start method of every worker process (see the module docstring).
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _exit_when_gone(pid: int) -> None:
    """Block until process ``pid`` has ended, then end this process at once."""
    try:
        if hasattr(os, "pidfd_open"):  # Linux: readable when the process terminates
            import select

            fd = os.pidfd_open(pid)
            select.select([fd], [], [])
        else:
            while True:
                os.kill(pid, 0)
                time.sleep(1.0)
    except (ProcessLookupError, OSError):
        pass
    os._exit(1)


def _init_worker(parent: int, then: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
    """Pool-worker set-up: ignore SIGINT, die with ``parent``, then run ``then(*args)``."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_gone, args=(parent,), daemon=True).start()
    if os.getppid() != parent and not _alive(parent):  # the parent died before we started
        os._exit(1)
    if then is not None:
        then(*args)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued tasks of ``pool`` and terminate its workers without waiting."""
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    # Before 3.14 the executor has no public way to end its workers: its process table is
    # the only handle on them.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.terminate()
        except (OSError, ValueError):  # already gone
            pass


@contextmanager
def worker_pool(
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    preload: Iterable[str] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A process pool of ``workers`` processes started by :data:`START_METHOD`, whose
    workers die with this process and ignore SIGINT; leaving the block by an exception
    (Ctrl-C included) cancels the queued tasks and terminates the workers, leaving it
    normally waits for them. ``preload``: modules the fork server imports once (when it
    starts: the first pool of the process names them), ``initializer(*initargs)`` runs in
    each worker. Tasks and the initializer must be importable functions (no lambdas)."""
    context = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver" and preload:
        context.set_forkserver_preload(list(preload))
    pool = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        yield pool
    except BaseException:
        stop_now(pool)
        raise
    pool.shutdown(wait=True)
