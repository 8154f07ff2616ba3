"""The deadline of a night: ``--until HH:MM`` or ``--hours H``."""

from __future__ import annotations

import datetime as dt


def parse(
    until: str | None = None, hours: float | None = None, now: dt.datetime | None = None
) -> dt.datetime:
    """``--until HH:MM`` (its next occurrence, local time) or ``--hours H`` (fractions allowed) from now.

    Raises ValueError with a one-line message for anything else.
    """
    now = now or dt.datetime.now().astimezone()
    if hours is not None:
        if not hours > 0:
            raise ValueError(f"--hours {hours}: must be above 0")
        return now + dt.timedelta(hours=hours)
    try:
        clock = dt.time.fromisoformat(str(until))
    except ValueError:
        raise ValueError(f"--until {until}: expected a time of day as HH:MM (e.g. 07:00)") from None
    at = now.replace(hour=clock.hour, minute=clock.minute, second=clock.second, microsecond=0)
    return at if at > now else at + dt.timedelta(days=1)
