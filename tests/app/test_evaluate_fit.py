"""`vaelab evaluate RUN` (IS, --ais, --bdmc) of runs that `vaelab.fit` wrote for models built in Python: the model is
rebuilt as `vaelab.load` rebuilds it (a `@vaelab.model_factory` VAE, a pythae VAE through
`vaelab.adapters.pythae.pythae_vae`), the data are a tensor file or none (BDMC simulates its own); a run that
cannot be rebuilt, or one given no data, is refused in one line that says what to do."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY, binary_images, one_thread, tiny_vae  # noqa: F401 (one_thread: a module-wide fixture)
from test_bad_inputs import one_error_line
from test_run_safety import cli

import vaelab

AIS = ["chains=4", "temps=20", "leapfrog=2"]


def _fit(model: torch.nn.Module, run: Path, objective: str = "elbo") -> torch.nn.Module:
    return vaelab.fit(
        model, objective, binary_images(64), epochs=2, batch_size=16, lr=3e-3, run_dir=run, progress=False
    )


def _evaluate_all(capsys, run: Path, data: Path) -> dict:
    """IS, --ais and --bdmc through the CLI; each exits 0 and writes its file, which is returned."""
    assert cli(capsys, "evaluate", run, "--data", data, "--samples", 50, "--no-progress")[0] == 0
    assert cli(capsys, "evaluate", run, "--data", data, "--ais", *AIS, "--no-progress")[0] == 0
    assert cli(capsys, "evaluate", run, "--bdmc", *AIS, "--subset", 4, "--no-progress")[0] == 0
    return {name: json.loads((run / name).read_text()) for name in ("eval-x.json", "eval-x-ais.json", "eval-bdmc.json")}


def _check(found: dict, model: torch.nn.Module, x: torch.Tensor) -> None:
    """The CLI's IS agrees with vaelab.evaluate on the loaded model (to Monte Carlo error), bounds are ordered."""
    is_, ais, bdmc = found["eval-x.json"], found["eval-x-ais.json"], found["eval-bdmc.json"]
    assert is_["n"] == ais["n"] == len(x) and is_["split"] == "x" and is_["dataset"] == "x.pt"
    assert is_["elbo"] <= is_["log_likelihood"] < 0 and is_["n_nonfinite"] == 0
    direct = vaelab.evaluate(model, x, samples=50, progress=False)
    assert abs(direct["log_likelihood"] - is_["log_likelihood"]) < 4 * is_["log_likelihood_mc_se"] + 0.1
    assert ais["is_log_likelihood"] == is_["log_likelihood"] and abs(ais["log_likelihood"] - is_["log_likelihood"]) < 1
    assert bdmc["n"] == 4 and bdmc["chains"] == 4 and bdmc["lower"] <= bdmc["upper"] + 0.5


def test_evaluate_a_fit_run_of_a_model_factory_vae(tmp_path, capsys):
    x = binary_images(24, seed=1)
    torch.save(x, tmp_path / "x.pt")
    model = _fit(tiny_vae(latent_dim=2), tmp_path / "run")
    found = _evaluate_all(capsys, tmp_path / "run", tmp_path / "x.pt")
    _check(found, vaelab.load(tmp_path / "run"), x)
    assert found["eval-x.json"]["active_units"] <= 2 == found["eval-x.json"]["latent_dim"]
    loaded = vaelab.load(tmp_path / "run").state_dict()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.values(), strict=True))


def test_evaluate_a_fit_run_of_a_pythae_vae(tmp_path, capsys):
    pytest.importorskip("pythae.models", reason="pythae is not installed (the test extra installs it)")
    from vaelab.adapters.pythae import PythaeModel, pythae_vae

    x = binary_images(24, seed=1)
    torch.save(x, tmp_path / "x.pt")
    torch.manual_seed(0)
    _fit(pythae_vae(input_dim=[1, 4, 4], latent_dim=2, reconstruction_loss="bce"), tmp_path / "run", "iwae")
    found = _evaluate_all(capsys, tmp_path / "run", tmp_path / "x.pt")
    loaded = vaelab.load(tmp_path / "run")
    assert isinstance(loaded, PythaeModel)
    _check(found, loaded, x)


def test_a_fit_run_that_cannot_be_rebuilt_or_has_no_data_is_one_line(tmp_path, capsys):
    model = tiny_vae()
    del model.vaelab_factory  # as if assembled from parts in a notebook: VAE needs arguments nobody recorded
    _fit(model, tmp_path / "parts")
    code, err = cli(capsys, "evaluate", tmp_path / "parts", "--bdmc", *AIS, "--no-progress")
    assert one_error_line(code, err, "evaluate", "cannot be rebuilt", "factory", "template=model"), err

    _fit(tiny_vae(), tmp_path / "run")
    code, err = cli(capsys, "evaluate", tmp_path / "run", "--samples", 5, "--no-progress")
    assert one_error_line(code, err, "evaluate", "--data DATASET", "--data FILE.pt"), err
    code, err = cli(capsys, "evaluate", tmp_path / "run", "--data", tmp_path / "missing.pt", "--no-progress")
    assert one_error_line(code, err, "evaluate", "missing.pt: no such file"), err
    torch.save(torch.zeros(3, 2, 2), tmp_path / "wrong.pt")
    code, err = cli(capsys, "evaluate", tmp_path / "run", "--data", tmp_path / "wrong.pt", "--no-progress")
    assert one_error_line(code, err, "evaluate", "shape (2, 2)", "(1, 4, 4)"), err


@pytest.mark.needs_dataset("mnist_static")
def test_fit_data_by_dataset_name_checks_each_split_against_the_model():
    from torch import nn

    from vaelab.app.runs import FitData
    from vaelab.errors import DataError

    parts = {"posterior": "diagonal_gaussian", "prior": "standard_normal", "likelihood": "bernoulli"}
    mnist = vaelab.VAE(nn.Flatten(), decoder=nn.Linear(2, 784), latent_dim=2, event_shape=(1, 28, 28), **parts)
    data = FitData("mnist_static", mnist)
    assert data.name == "mnist_static" and data.split("test").shape[1:] == (1, 28, 28)
    with pytest.raises(DataError, match=r"shape \(1, 28, 28\), the model \(1, 4, 4\)"):
        FitData("mnist_static", tiny_vae()).split("valid")


def test_data_is_refused_for_a_run_of_vaelab_train(tmp_path, capsys):
    assert cli(capsys, "train", *TINY, "--run-dir", tmp_path / "cli")[0] == 0
    torch.save(binary_images(4), tmp_path / "x.pt")
    code, err = cli(capsys, "evaluate", tmp_path / "cli", "--data", tmp_path / "x.pt", "--no-progress")
    assert one_error_line(code, err, "evaluate", "--data is for runs that vaelab.fit wrote", "config's dataset"), err


def test_sample_a_fit_run(tmp_path, capsys):
    """`vaelab sample RUN` of a vaelab.fit run (a model factory VAE, a pythae VAE): samples.png from the rebuilt
    model (the same seed, the same picture); reconstructions.png and the 2-D posterior pictures only with --data,
    whose one split (the file's stem) is the default; without it a note says so, and exit 0."""
    x = binary_images(24, seed=1)
    torch.save(x, tmp_path / "x.pt")
    models = {"factory": lambda: tiny_vae(latent_dim=2)}
    if importlib.util.find_spec("pythae") is not None:
        from vaelab.adapters.pythae import pythae_vae

        models["pythae"] = lambda: pythae_vae(input_dim=[1, 4, 4], latent_dim=2, reconstruction_loss="bce")
    for name, build in models.items():
        run = tmp_path / name
        torch.manual_seed(0)
        _fit(build(), run)
        code, err = cli(capsys, "sample", run, "--n", 16, "--out", run / "a")
        assert code == 0 and any("no --data given" in line for line in err), (name, err)
        assert sorted(p.name for p in (run / "a").iterdir()) == ["samples.png", "training.png"], name
        assert cli(capsys, "sample", run, "--n", 16, "--out", run / "b", "--data", tmp_path / "x.pt")[0] == 0
        found = sorted(p.name for p in (run / "b").iterdir())
        assert found == ["posterior-x.png", "reconstructions.png", "samples.png", "training.png"], (name, found)
        assert (run / "a" / "samples.png").read_bytes() == (run / "b" / "samples.png").read_bytes()
    del_factory = tiny_vae()
    del del_factory.vaelab_factory
    _fit(del_factory, tmp_path / "parts")
    code, err = cli(capsys, "sample", tmp_path / "parts")
    assert one_error_line(code, err, "sample", "cannot be rebuilt", "template=model"), err
