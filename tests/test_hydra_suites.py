"""Hydra's own sweeper and launcher test suites, run against sweeplab's sweeper
(hydra/sweeper=sweeplab_standalone: the project's sweeper config without its sampler and pruner groups).

BatchedSweeperTestSuite does not apply: sweeplab launches a grid as one batch (max_batch_size does not exist).
"""

from __future__ import annotations

from collections.abc import Iterator

from hydra import version
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import fixture, mark


@fixture(autouse=True)
def unset_version_base() -> Iterator[None]:
    """The suites expect Hydra's version base unset; other tests' compose() calls set it to 1.3."""
    before = version.VersionBase.instance().getbase()
    version.VersionBase.instance().version_base = version._UNSPECIFIED_
    yield
    version.VersionBase.instance().version_base = before


@mark.parametrize(("launcher_name", "overrides"), [("basic", ["hydra/sweeper=sweeplab_standalone"])])
class TestSweeplabSweeperWithBasicLauncher(LauncherTestSuite):
    pass


@mark.parametrize(
    ("task_launcher_cfg", "extra_flags"),
    [({"defaults": [{"override hydra/sweeper": "sweeplab_standalone"}, "_self_"]}, ["-m"])],
)
class TestSweeplabSweeperIntegration(IntegrationTestSuite):
    pass
