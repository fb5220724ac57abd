"""numpy's BLAS on one thread while torch computes.

numpy's OpenBLAS keeps its worker threads spinning for a while after every call, and on a
machine with few cores they take the cores torch's own threads are about to use. A stream's
small numpy steps (features, rotations) between torch calls then slow every torch op that
follows: on this project's 2-vCPU test machine a paper-size streaming chunk at 2 torch threads
took p50 189-200 ms with numpy's default BLAS threads and 100-147 ms with one
(``benchmarks/streaming.py``). numpy's work here is tiny, so one thread costs it nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # built on first use (about 2 ms: it inspects the loaded libraries), after numpy is loaded
    return ThreadpoolController()


@contextmanager
def single_thread_blas() -> Iterator[None]:
    """Inside the block, the BLAS libraries this process had loaded at its first call
    (numpy's and scipy's OpenBLAS) use one thread; torch's own threads are untouched. Entering
    costs about 20 us."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
