"""Configs: defaults, overrides, and one-line errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaelab.config import Config, apply_overrides, config_from_dict, load_config
from vaelab.config.build import build_model, lr_factor, schedule_epochs
from vaelab.data import DATASETS, SYNTHETIC
from vaelab.errors import ConfigError


def test_default_config_builds_the_quickstart_model():
    cfg = load_config(None)
    assert cfg.data.name == "mnist_static"
    model = build_model(cfg.model, (1, 28, 28))
    assert model.latent_dim == 40
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_overrides_are_read_as_yaml_and_validated():
    cfg = load_config(None, ["train.epochs=3", "model.latent_dim=2", "train.lr=1e-3", "model.encoder.hidden=[8]"])
    assert (cfg.train.epochs, cfg.model.latent_dim, cfg.train.lr) == (3, 2, 1e-3)
    assert cfg.model.encoder == {"type": "gated_mlp", "hidden": [8]}
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, "unknown config key 'trian' (did you mean 'train'?)"),
        ({"train": {"epocs": 3}}, "unknown config key 'train.epocs' (did you mean 'epochs'?)"),
        ({"train": {"epochs": "many"}}, "train.epochs must be an int"),
        ({"model": {"prior": {}}}, "model.prior needs a 'type' key"),
        ({"data": 3}, "data must be a mapping"),
    ],
)
def test_config_errors(data, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("prior", {"type": "vampprio"}, "unknown prior 'vampprio'"),
        ("encoder", {"type": "mlp", "hiden": [3]}, "unknown option 'hiden' for network 'mlp' (did you mean 'hidden'?)"),
        ("posterior", {"type": "diagonal_gaussian", "latent_dim": 3}, "is set by vaelab itself"),
        ("encoder", {"type": "mlp", "activation": "relux"}, "unknown activation 'relux'"),
    ],
)
def test_component_errors(section, value, message):
    cfg = Config()
    setattr(cfg.model, section, value)
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, (1, 28, 28))
    assert message in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["objective.type=iwae", "objective.options={samples: 5}"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_lr_schedules():
    assert lr_factor({"type": "constant"}, 99) == 1.0
    assert lr_factor({"type": "step", "every": 10, "gamma": 0.5}, 25) == 0.25
    iwae = {"type": "iwae"}
    assert schedule_epochs(iwae) == 3280  # sum of 3^i, i = 0..7 (Burda et al.)
    assert lr_factor(iwae, 0) == 1.0
    assert lr_factor(iwae, 1) == pytest.approx(10 ** (-1 / 7))  # epochs 1-3 are stage i = 1
    assert lr_factor(iwae, 3) == pytest.approx(10 ** (-1 / 7))
    assert lr_factor(iwae, 4) == pytest.approx(10 ** (-2 / 7))
    assert lr_factor(iwae, 3279) == pytest.approx(10 ** (-7 / 7))
    per_step = {"type": "step", "every_steps": 15000, "gamma": 0.5}  # SIWAE app. D.3
    assert [lr_factor(per_step, 3, s) for s in (0, 14999, 15000, 45000)] == [1.0, 1.0, 0.5, 0.125]


@pytest.mark.parametrize(
    "schedule",
    [{"type": "step"}, {"type": "step", "every": 10, "every_steps": 100}, {"type": "step", "every_steps": 0}],
)
def test_step_schedule_needs_one_positive_period(schedule):
    with pytest.raises(ConfigError, match="every"):
        lr_factor(schedule, 0)


def dataset_event_shape(name: str) -> tuple[int, ...]:
    return (DATASETS[name] if name in DATASETS else SYNTHETIC[name]).event_shape


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_build_for_each_budget(path):
    import yaml

    budgets = (yaml.safe_load(path.read_text()) or {}).get("budgets", {})
    assert "quick" in budgets and "full" in budgets, "every experiment has a quick and a full budget"
    for budget in budgets:
        cfg = load_config(path, budget=budget)
        event = dataset_event_shape(cfg.data.name)
        build_model(cfg.model, event, train_data=torch.rand(1000, *event))  # VampPrior data needs images
    with pytest.raises(ConfigError, match="no budget 'huge'"):
        load_config(path, budget="huge")
