"""The retrying RDB storage covers every storage call Optuna makes (``sweeps.search.retry``)."""

from __future__ import annotations

import inspect
import re

from optuna.storages import _cached_storage

from sweeps.search import retry


def test_every_call_of_optunas_storage_cache_on_our_storage_retries():
    """A study wraps its storage in Optuna's ``_CachedStorage``, which also calls private methods: each
    one it calls must go through the retry, or a database restart reaches the user as a traceback."""
    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_cached_storage)))
    assert "_set_trial_param" in called  # the pattern still finds them
    missing = [
        name
        for name in sorted(called - retry._NO_DATABASE)
        if not hasattr(getattr(retry.RetryingRDBStorage, name), "__wrapped__")
    ]
    assert missing == []
