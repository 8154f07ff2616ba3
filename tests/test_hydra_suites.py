"""Hydra's own sweeper and launcher test suites, run against sweeplab's sweeper (hydra/sweeper=sweeplab).

BatchedSweeperTestSuite does not apply: sweeplab launches a grid as one batch (max_batch_size does not exist).
"""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark


@mark.parametrize(("launcher_name", "overrides"), [("basic", ["hydra/sweeper=sweeplab"])])
class TestSweeplabSweeperWithBasicLauncher(LauncherTestSuite):
    pass


@mark.parametrize(
    ("task_launcher_cfg", "extra_flags"),
    [({"defaults": [{"override hydra/sweeper": "sweeplab"}, "_self_"]}, ["-m"])],
)
class TestSweeplabSweeperIntegration(IntegrationTestSuite):
    pass
