"""The MLflow runs of an Optuna study's trials, found by the tags every trial's run carries
(``sweeplab.study``, ``sweeplab.trial``: ``training.context``)."""

from __future__ import annotations

from typing import Any


def of_study(client: Any, experiment_id: str, study: str, running: bool = False) -> list[Any]:
    """Every run of ``study``'s trials in the experiment (``running``: only those still RUNNING), the latest
    first, page by page. A study name with both kinds of quote cannot be said in MLflow's filter: no runs."""
    quote = next((q for q in "'\"" if q not in study), None)
    if quote is None:
        return []
    where = f'tags."sweeplab.study" = {quote}{study}{quote}'
    if running:
        where += " and attributes.status = 'RUNNING'"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=where,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
