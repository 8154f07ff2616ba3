"""The morning report's summary, POSTed as JSON to the URL in ``SWEEPLAB_WEBHOOK_URL`` (if set).

A webhook URL is a credential (whoever has it can post), so it is read from the environment only and never
printed, logged or stored: the outcome is one line, "webhook: sent" or the kind of error without the URL.
Standard library only: one POST needs no client library.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

ENV = "SWEEPLAB_WEBHOOK_URL"


def payload(summary: dict[str, Any]) -> dict[str, Any]:
    """What is sent: the headline numbers, and a ``text`` line that chat webhooks (Slack, Mattermost) show."""
    best, changes, tonight = summary.get("best"), summary.get("changes", {}), summary["tonight"]
    headline = f"sweeplab nightly {summary['plan']} ({summary['night']}): "
    if best:
        headline += f"best {summary['metric']}={best['value']:.4f}"
        if changes.get("new_best"):
            headline += " (new best)"
    else:
        headline += "no completed trial yet"
    headline += (
        f"; tonight {tonight['complete']} completed, {tonight['pruned']} pruned, {tonight['failed']} failed"
        f"; exit code {summary['exit_code']}"
    )
    keys = ("plan", "night", "study", "metric", "exit_code", "best", "tonight", "study_totals", "report")
    return {"text": headline, **{k: summary.get(k) for k in keys}, "changes": changes}


def notify(summary: dict[str, Any], timeout: float = 10) -> str | None:
    """Send the summary if a webhook is configured; returns the line to print (None when none is)."""
    url = os.environ.get(ENV, "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        return f"webhook: not sent ({ENV} must be an http(s) URL)"
    body = json.dumps(payload(summary)).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=timeout).close()  # noqa: S310 - http(s) checked above
    except urllib.error.HTTPError as err:
        return f"webhook: not sent (the server answered HTTP {err.code})"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"webhook: not sent ({type(reason).__name__})"
    return "webhook: sent"
