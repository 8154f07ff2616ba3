"""The search space from Hydra's sweep syntax, with Hydra's own override parser."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.search.space import Space, format_value, parse_space, probes, study_name
from sweeps.support.errors import ConfigError


def space(*arguments: str, params: dict[str, str] | None = None) -> Space:
    return parse_space(OverridesParser.create(), arguments, params)


def test_sweep_expressions_become_optuna_distributions():
    found = space(
        "lr=tag(log, interval(1e-5, 1e-1))",
        "optimizer=choice(adam, sgd)",
        "trainer.max_epochs=range(2, 11, 2)",
        "optimizer.beta1=interval(0.8, 0.99)",
        "seed=3",
    )
    assert found.distributions == {
        "lr": FloatDistribution(1e-5, 1e-1, log=True),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "trainer.max_epochs": IntDistribution(2, 10, step=2),
        "optimizer.beta1": FloatDistribution(0.8, 0.99),
    }
    assert found.fixed == ["seed=3"]
    assert found.overrides({"lr": 0.1 / 3}) == ["seed=3", f"lr={0.1 / 3!r}"]
    assert float(format_value(0.1 / 3)) == 0.1 / 3  # floats round-trip exactly


def test_the_command_line_wins_over_params_and_the_name_follows_the_space():
    found = space("lr=interval(0.01, 0.1)", params={"lr": "interval(1e-5, 1e-1)", "seed": "1"})
    assert found.distributions["lr"] == FloatDistribution(0.01, 0.1)
    assert study_name(found) == study_name(space("seed=1", "lr=interval(0.01, 0.1)"))
    assert study_name(found) != study_name(space("lr=interval(0.01, 0.2)", "seed=1"))


def test_study_names_say_what_they_search_and_keep_different_spaces_apart():
    lr_betas = {"lr": "tag(log, interval(1e-4, 1e-1))", "optimizer.beta1": "interval(0.8, 0.99)"}
    preset = study_name(space("search=lr_betas", params=lr_betas))
    assert preset.startswith("lr_betas ") and preset == study_name(space("search=lr_betas", params=lr_betas))
    swept = study_name(space("lr=interval(0.01, 0.1)", "optimizer=sgd"))
    assert swept.startswith("lr optimizer=sgd ") and swept != preset
    assert study_name(space("lr=interval(0.01, 0.2)", "optimizer=sgd")) != swept
    assert study_name(space("search=lr_betas", "seed=2", params=lr_betas)) != preset
    long = study_name(space("lr=interval(0.01, 0.1)", *[f"k{i}=v{i}" for i in range(30)]))
    assert len(long) <= 70
    secret = study_name(space("lr=interval(0.01, 0.1)", "tracking.uri=http://u:Canary9@h"))
    assert "Canary9" not in secret


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("lr=interval(0.1, 0.01)", "lr: empty interval(0.1, 0.01)"),
        ("lr=tag(log, interval(0, 1))", "lr: a log interval must be above 0"),
        ("lr=interval(0.1", "malformed search expression 'lr=interval(0.1'"),
        ("x=range(5, 1)", "x: empty range(5, 1, 1)"),
        ("seed=3", "the search has no parameter to search"),
    ],
)
def test_bad_expressions_are_one_line_naming_the_key(argument: str, message: str):
    with pytest.raises(ConfigError) as err:
        space(argument)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_probes_cover_each_bound_and_each_choice():
    found = space("lr=interval(0.01, 0.1)", "optimizer=choice(adam, sgd, rmsprop)")
    assert probes(found) == [
        ["lr=0.01", "optimizer=adam"],
        ["lr=0.1", "optimizer=adam"],
        ["lr=0.01", "optimizer=sgd"],
        ["lr=0.01", "optimizer=rmsprop"],
    ]


def test_a_study_name_with_a_path_in_it_locks_a_file_beside_the_journal(tmp_path):
    from sweeps.search.locks import lock

    journal = tmp_path / "optuna.journal"
    name = study_name(space("lr=interval(0.01, 0.1)", "data.path=/data/my table.csv"))
    with lock(str(journal), f"study:{name}"):
        assert [p.name for p in tmp_path.glob("*.lock")]  # beside the journal, not in a folder of the path
