"""The Hypothesis profiles of the suite, and how many examples a property test tries.

- ``deterministic`` (loaded by ``tests/conftest.py``: what ``scripts/test`` runs): every run tries
  the same examples (``derandomize``), with no example database that could make one run differ
  from the next, no deadline and no "too slow" health check (timing belongs in ``bench/``).
- ``fuzz`` (``scripts/fuzz``): a random seed unless one is given, and ``$SHEEPDOG_FUZZ_SCALE``
  times the examples (10 by default).

A property test states its number of examples for the deterministic run through
:func:`examples`, so that the fuzz run scales every test alike.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["DETERMINISTIC", "FUZZ", "examples", "register_profiles"]

DETERMINISTIC = "deterministic"
FUZZ = "fuzz"
_BASE_EXAMPLES = 100  # the deterministic profile's max_examples, Hypothesis' own default


def register_profiles() -> None:
    common = settings(
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        DETERMINISTIC, parent=common, derandomize=True, max_examples=_BASE_EXAMPLES
    )
    scale = int(os.environ.get("SHEEPDOG_FUZZ_SCALE", "10"))
    settings.register_profile(
        FUZZ, parent=common, derandomize=False, max_examples=_BASE_EXAMPLES * scale
    )


def examples(deterministic: int) -> int:
    """``deterministic`` in the deterministic profile; as many times more in the fuzz profile
    as its ``max_examples`` is above the deterministic one's."""
    return max(1, deterministic * settings().max_examples // _BASE_EXAMPLES)
