"""Start-up without the cyclic garbage collector; what start-up built is then frozen.

Importing torch, Lightning, scikit-learn, Hydra and Optuna makes about half a million objects. While they
load, CPython's collector runs full collections over all of them again and again: about 1 s of a 4 s start on
2 cores, and another 0.2-0.4 s in the first trial, when the next full collection comes. Modules, classes and
functions are never garbage, so looking is wasted. An entry point (the command, a trial worker, the
tracking process) calls ``pause`` before its imports and ``resume`` once they are done, before any model or
data are built (``training.fit.prepare``, the sweep's trial loop, the tracking store opened): ``gc.freeze``
moves every object alive then into the permanent generation, which later collections skip (CPython's
documented use for long-lived start-up state), and collection goes on as usual for what jobs make. Cyclic
garbage made before that stays until the process ends: a few MB of import-time leftovers (a sweep's config
check builds its models on the meta device, without memory).

A process that never paused (a library caller, the tests) is left alone: ``resume`` does nothing there.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off until ``resume`` (an entry point, before its heavy imports)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what exists and turn the collector back on, once; a no-op unless ``pause`` turned it off."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
