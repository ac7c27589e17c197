"""The garbage collector's settings for ``sheepdog serve``: a long-running server's heap.

CPython starts a young collection whenever 700 more container objects have been allocated than
freed. A relay with a hundred requests in flight holds thousands of young objects that are about
to be freed by reference counting anyway, so with the default it collected hundreds of times a
second, found almost nothing to free, and promoted the requests in flight to the older
generations, whose collections then walked the whole heap: the configuration, the templates, the
metric series. The more requests in flight, the more of them were promoted, so the cost per
request grew with concurrency (bench/analysis.md has the figures).

So, once start-up is done, what it built is moved out of the collector's sight (``gc.freeze``),
and a young collection waits for :data:`YOUNG_THRESHOLD` objects: more than a thousand streams
hold at once. Reference cycles are still collected, a little later; almost nothing a request
allocates is in one.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["YOUNG_THRESHOLD", "freeze_long_lived", "tune_collector"]

YOUNG_THRESHOLD: Final = 50_000


def tune_collector() -> None:
    """Collect young objects only every :data:`YOUNG_THRESHOLD` allocations."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_long_lived() -> None:
    """Take every object alive now out of future collections: call when the config is in place.

    Called again after a reload: what was frozen is unfrozen and collected first, so the old
    config's objects that are only held by cycles are freed rather than kept for ever.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
