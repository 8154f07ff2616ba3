"""Old config names that still work: each, when chosen, says its new name in one line on stderr.

Why: ``schedule`` (nightly plans) read like ``scheduler`` (learning-rate schedules), so the group is ``plan``
now; ``conf/schedule/`` keeps thin files that pull in the plan, so old commands keep working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

GROUPS = {"schedule": "plan"}  # old config group -> its new name
NOTED = "SWEEPLAB_RENAMES_NOTED"  # set once said: the processes started later say nothing


def notes(choices: Mapping[str, Any]) -> list[str]:
    """One line per old group name among Hydra's runtime choices."""
    return [
        f"note: the config group `{old}` is now `{new}` (conf/{new}/): use {new}={choice}; "
        f"`{old}=` still works for now"
        for old, new in GROUPS.items()
        if (choice := choices.get(old))
    ]


def say(choices: Mapping[str, Any]) -> None:
    """Print ``notes(choices)`` on stderr, once for this process and the processes it starts."""
    lines = [] if os.environ.get(NOTED) else notes(choices)
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    if lines:
        os.environ[NOTED] = "1"
