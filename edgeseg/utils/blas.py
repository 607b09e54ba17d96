"""How many threads numpy's BLAS may use for host work (decoding masks, tracking)."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run the enclosed host work with at most ``n`` BLAS threads (numpy's matrix products).

    OpenBLAS starts one thread per core by default. Pinned to a single core, or on a
    machine whose other cores are busy (a training, a benchmark), those threads take turns
    and spin: the tracker's mask products measured 5-8x slower, and decoding 100 FastInst
    masks per image 10x slower (an `edgeseg eval` of 200 images: 197 s), than with one thread.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(n)), user_api="blas"):
        yield
