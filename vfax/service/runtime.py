"""Process-wide settings for ``vfax serve``, the process that carries hundreds of calls in real time.

Python's cyclic garbage collector runs a young collection every 700 net allocations and, now and
then, a full one over every object in the process; with hundreds of calls (dialogs, transactions,
call reports) a full collection holds the event loop for longer than a 20 ms media tick, and the
media clock has to skip ticks. Here what exists once the service is up (modules, configuration) is
frozen out of collections and collections run far less often. Measured with
``bench/calls.py --n 400 --modes g711`` (its workers call this too): slipped ticks 303–460 without,
190–233 with; the calls' stretch +16 to +26 % without, +12 to +14 % with (noisy 2-core machine,
two or more runs each). The price: garbage cycles wait for 100,000 allocations, and an object
created before the call and later dropped in a cycle is never collected (start-up objects live for
the whole process anyway). One-shot commands (``vfax send``, ``receive``, ``demo``) do not use it.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_for_real_time"]

GC_THRESHOLDS = (100_000, 50, 1000)
"""gc.set_threshold values: young collection every 100,000 allocations, older ones rarely."""


def tune_for_real_time() -> None:
    """Freeze what exists now out of the collector and make collections rare. Call once, at start-up,
    before the calls begin (again, it freezes what was created meanwhile)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
