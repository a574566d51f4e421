"""The Python API (issue 10): `vaelab.VAE` from a notebook user's own networks, `fit` with the CLI's trainer,
`evaluate` and `ais`, and `load` in a fresh process (by a recorded factory, or into a template)."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.distributions import Independent, Normal
from torch.utils.data import DataLoader, TensorDataset

import vaelab
from vaelab.errors import ConfigError, RunDirError

TESTS = Path(__file__).parent
EVENT = (1, 28, 28)


# --- a notebook user's own networks -------------------------------------------------------------------------
class ConvEncoder(nn.Module):
    """x [B, 1, 28, 28] -> features [B, F]; F is whatever the convolutions give (found by vaelab)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        conv = nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 4, 2, 1)
        self.net = nn.Sequential(*conv, nn.Flatten())  # [B, width * 7 * 7]

    def forward(self, x):
        return self.net(x)


class GaussianHead(nn.Module):
    """features [B, F] -> N(mu, diag sigma^2) over [D], batch [B]; a lazy layer, so F is never declared."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.head = nn.LazyLinear(2 * latent_dim)

    def forward(self, h):
        mu, s = self.head(h).chunk(2, -1)
        return Independent(Normal(mu, F.softplus(s) + 1e-4), 1)


class ConvDecoder(nn.Module):
    """z [N, D] -> Bernoulli logits [N, 1, 28, 28]."""

    def __init__(self, latent_dim: int, width: int = 4) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, width * 14 * 14)
        self.up = nn.ConvTranspose2d(width, 1, 4, 2, 1)

    def forward(self, z):
        return self.up(torch.relu(self.fc(z)).view(-1, self.width, 14, 14))


@vaelab.model_factory
def conv_vae(latent_dim: int = 4, width: int = 4) -> vaelab.VAE:
    return vaelab.VAE(
        encoder=ConvEncoder(width),
        posterior=GaussianHead(latent_dim),
        prior="standard_normal",
        decoder=ConvDecoder(latent_dim, width),
        likelihood="bernoulli",
        event_shape=EVENT,
    )


def mlp_vae(latent_dim: int = 2) -> vaelab.VAE:
    """A VAE assembled from parts (no factory): its class needs arguments, so `load` needs a template."""
    dec = nn.Sequential(nn.Linear(latent_dim, 784), nn.Unflatten(1, EVENT))
    return vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", dec, "bernoulli", latent_dim, EVENT)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return vaelab.load_dataset("mnist_static").split("train")[:500]  # [500, 1, 28, 28], bundled


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("api") / "run"
    model = vaelab.fit(conv_vae(), "elbo", images[:400], images[400:], epochs=2, batch_size=50, run_dir=run,
                       progress=False)  # fmt: skip
    return model, run


def fresh_process(code: str) -> None:
    """Run `code` in a new Python that can import this test module (the factory `test_api:conv_vae`)."""
    prelude = f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert sorted(own) == sorted(state)
    for k, v in own.items():
        assert torch.equal(v, state[k]), k


# --- the notebook flow --------------------------------------------------------------------------------------
def test_fit_trains_with_the_cli_trainer(trained):
    model, run = trained
    assert model.run_dir == run and not model.training
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("valid_loss" in r for r in rows)
    assert (run / "best.safetensors").is_file() and (run / "best.safetensors.sha256").is_file()
    assert (run / "checkpoints" / "latest").is_file() and (run / "provenance.json").is_file()
    record = json.loads((run / "model.json").read_text())
    assert record["rebuild"] == {"factory": "test_api:conv_vae", "args": [], "kwargs": {}}
    same_weights(model, load_file(run / "best.safetensors"))


def test_evaluate_and_ais(trained, images):
    model, _ = trained
    x = images[:10]
    out = vaelab.evaluate(model, x, samples=64, batch_size=5, progress=False)
    for key in ("is_samples", "log_likelihood", "log_likelihood_se", "log_likelihood_mc_se", "elbo", "ess_median",
                "n_nonfinite", "bits_per_dim"):  # fmt: skip
        assert key in out
    assert out["n"] == 10 and out["n_nonfinite"] == 0 and out["elbo"] <= out["log_likelihood"] + 1.0
    assert set(out["per_example"]) == {"log_likelihood", "elbo", "mc_se", "ess"}
    assert out["per_example"]["ess"].shape == (10,)
    a = vaelab.ais(model, x[:4], chains=4, temps=10, leapfrog=2, progress=False)
    assert a["n"] == 4 and a["n_nonfinite"] == 0 and a["per_example"]["log_likelihood"].shape == (4,)


def test_evaluate_takes_any_posterior_and_log_joint(trained, images):
    model, _ = trained

    class Bare:  # only what the estimators need
        posterior, log_joint = model.posterior, model.log_joint

    out = vaelab.evaluate(Bare(), images[:4], samples=16, progress=False)
    assert out["n"] == 4 and out["n_nonfinite"] == 0
    assert vaelab.ais(Bare(), images[:2], chains=2, temps=5, leapfrog=1, progress=False)["n"] == 2


def test_load_in_a_fresh_process(trained, tmp_path):
    model, run = trained
    code = f"""
import torch, vaelab
from safetensors.torch import save_file
from test_api import conv_vae
rebuilt = vaelab.load({str(run)!r})
torch.manual_seed(123)
into = vaelab.load({str(run)!r}, template=conv_vae())
assert type(rebuilt).__name__ == "VAE" and not rebuilt.training
save_file(rebuilt.state_dict(), {str(tmp_path / "rebuilt.safetensors")!r})
save_file(into.state_dict(), {str(tmp_path / "template.safetensors")!r})
"""
    fresh_process(code)
    same_weights(model, load_file(tmp_path / "rebuilt.safetensors"))
    same_weights(model, load_file(tmp_path / "template.safetensors"))


def test_a_model_that_cannot_be_rebuilt_needs_a_template(images, tmp_path):
    torch.manual_seed(0)
    model = vaelab.fit(mlp_vae(), "iwae", images[:100], epochs=1, batch_size=50, run_dir=tmp_path / "r", progress=False)
    assert "needs arguments" in json.loads((tmp_path / "r" / "model.json").read_text())["why"]
    with pytest.raises(RunDirError, match=r"vaelab.load\(run_dir, template=model\)"):
        vaelab.load(tmp_path / "r")
    same_weights(vaelab.load(tmp_path / "r", template=mlp_vae()), model.state_dict())
    with pytest.raises(RunDirError, match="template must be the model that was trained"):
        vaelab.load(tmp_path / "r", template=mlp_vae(latent_dim=3))

    from vaelab.recording import construction

    Notebook = type("Notebook", (nn.Module,), {"__module__": "__main__"})  # a class a notebook defined
    assert "cannot import" in construction(Notebook())["why"] and construction(Notebook())["rebuild"] is None


def test_zuko_flow_posterior_and_a_torch_distribution_prior(images, tmp_path):
    zuko = pytest.importorskip("zuko")
    torch.manual_seed(0)
    D, features = 3, 16
    model = vaelab.VAE(
        encoder=nn.Sequential(ConvEncoder(), nn.LazyLinear(features)),  # the flow's context width is the user's
        posterior=zuko.flows.NSF(features=D, context=features, transforms=2, hidden_features=(16,)),
        prior=Independent(Normal(torch.zeros(D), torch.ones(D)), 1),
        decoder=ConvDecoder(D),
        likelihood="bernoulli",
        event_shape=EVENT,
    )
    assert model.latent_dim == D
    vaelab.fit(model, "elbo", images[:100], epochs=1, batch_size=50, run_dir=tmp_path / "z", progress=False)
    out = vaelab.evaluate(model, images[:4], samples=16, progress=False)
    assert out["n_nonfinite"] == 0
    assert vaelab.ais(model, images[:2], chains=2, temps=5, leapfrog=1, progress=False)["n_nonfinite"] == 0
    flow_prior = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", zuko.flows.MAF(features=D), nn.Linear(D, 784),
                            "bernoulli", event_shape=EVENT)  # fmt: skip
    assert flow_prior.latent_dim == D
    z = flow_prior.posterior(images[:2]).rsample((5,))
    assert flow_prior.log_joint(images[:2], z).shape == (5, 2)
    assert any(k.startswith("prior.module.") for k in flow_prior.state_dict())  # the flow prior trains


def test_fit_takes_a_dataloader_and_a_dataset(images, tmp_path):
    x, y = images[:100], torch.zeros(100)
    from vaelab.fitting import as_tensor

    assert torch.equal(as_tensor(TensorDataset(x, y)), x) and torch.equal(as_tensor(TensorDataset(x)), x)
    assert torch.equal(as_tensor(DataLoader(TensorDataset(x, y), batch_size=32)), x)
    loader, dataset = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), TensorDataset(x)
    model = vaelab.fit(mlp_vae(), "elbo", loader, dataset, epochs=1, run_dir=tmp_path / "d", progress=False)
    assert (model.run_dir / "best.safetensors").is_file()


def test_fit_refuses_a_used_run_dir_and_resumes(images, tmp_path):
    run, x = tmp_path / "r", images[:100]
    vaelab.fit(mlp_vae(), "elbo", x, epochs=1, batch_size=50, run_dir=run, progress=False)
    with pytest.raises(RunDirError, match="resume=True"):
        vaelab.fit(mlp_vae(), "elbo", x, epochs=2, batch_size=50, run_dir=run, progress=False)
    vaelab.fit(mlp_vae(), "elbo", x, epochs=2, batch_size=50, run_dir=run, progress=False, resume=True)
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(ConfigError, match="unknown option 'grad_clipping'"):
        vaelab.fit(mlp_vae(), "elbo", x, epochs=1, run_dir=tmp_path / "e", grad_clipping=1.0)


def test_vae_errors_name_what_to_fix():
    with pytest.raises(ConfigError, match=r"encoder must return features \[B, F\]"):
        vaelab.VAE(nn.Identity(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 784), "bernoulli", 2, EVENT)
    with pytest.raises(ConfigError, match="784 likelihood parameters"):
        vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 10), "bernoulli", 2, EVENT)
    with pytest.raises(TypeError, match="needs event_shape"):
        vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 784), "bernoulli")


def test_import_vaelab_is_cheap_and_names_resolve():
    code = "import sys, vaelab; assert 'torch' not in sys.modules, 'torch'; vaelab.VAE; vaelab.ELBO; vaelab.Bernoulli"
    fresh_process(code)
    assert vaelab.DiagonalGaussian.__name__ == "DiagonalGaussian" and "fit" in dir(vaelab)
    with pytest.raises(AttributeError):
        vaelab.no_such_name  # noqa: B018


PUBLIC = [name for name in vaelab.__all__ if name != "__version__"]
#: The modules that define vaelab's top-level names: their doctests (module, classes, functions) run below.
DEFINING = sorted({getattr(vaelab, name).__module__ for name in PUBLIC})


def test_every_top_level_name_has_a_runnable_example():
    missing = [name for name in PUBLIC if ">>>" not in (getattr(vaelab, name).__doc__ or "")]
    assert not missing, f"no doctest example in the docstring of vaelab.{', vaelab.'.join(missing)}"
    assert {"vaelab.posteriors.base", "vaelab.objectives.aiwae", "vaelab.models.hvae"} <= set(DEFINING)


@pytest.mark.parametrize("module", DEFINING)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_load_a_cli_run_and_record_a_factory_given_to_fit(images, tmp_path):
    from vaelab.app import runs
    from vaelab.config import load_config

    tiny = ["data.subset=100", "data.valid_subset=50", "model.latent_dim=2", "model.encoder={type: mlp, hidden: [8]}",
            "model.decoder={type: mlp, hidden: [8]}", "train.progress=false", "train.epochs=1"]  # fmt: skip
    trained = runs.train(load_config(None, tiny), tmp_path / "cli").model
    same_weights(vaelab.load(tmp_path / "cli"), trained.state_dict())

    import functools

    from vaelab.recording import construction

    record = construction(mlp_vae(), factory=functools.partial(conv_vae, latent_dim=4))
    assert record["rebuild"] == {"factory": "test_api:conv_vae", "args": [], "kwargs": {"latent_dim": 4}}
    with pytest.raises(RunDirError, match="importable function"):
        construction(mlp_vae(), factory=lambda: mlp_vae())
    model = vaelab.fit(conv_vae(width=2), vaelab.IWAE(samples=2), images[:50], epochs=1, run_dir=tmp_path / "o",
                       progress=False)  # fmt: skip
    assert json.loads((tmp_path / "o" / "model.json").read_text())["rebuild"]["kwargs"] == {"width": 2}
    assert (model.run_dir / "fit.yaml").is_file()


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    text = (TESTS.parent / "README.md").read_text()
    section = text[text.index("## Library") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n\n")]
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    same_weights(scope["again"], scope["model"].state_dict())
    assert scope["result"]["n"] == 10 and (tmp_path / "runs" / "notebook" / "model.json").is_file()


def test_the_built_parts_form_still_flattens_x():
    from vaelab.config import load_config
    from vaelab.config.build import build_model

    built = build_model(load_config(None, ["model.latent_dim=2"]).model, EVENT)  # VAE(encoder, family, ...)
    assert built.flatten and built.posterior(torch.zeros(3, *EVENT)).batch_shape == (3,)
    flat = vaelab.VAE(nn.Linear(784, 8), "diagonal_gaussian", "standard_normal", nn.Linear(2, 784), "bernoulli", 2,
                      EVENT, flatten=True)  # fmt: skip
    assert flat.log_joint(torch.zeros(3, *EVENT), torch.zeros(4, 3, 2)).shape == (4, 3)


def test_a_fit_run_opened_for_evaluation_resolves_its_weights_once(trained, monkeypatch):
    """`open_run` of a `vaelab.fit` run records the weights file it loaded, resolved once: resolved twice, a
    checkpoint written in between by a training run would make the record name other weights than those used."""
    from vaelab import recording
    from vaelab.app import runs

    calls, real = [], recording.weights_file

    def counting(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(recording, "weights_file", counting)
    monkeypatch.setattr(runs, "weights_file", counting, raising=False)  # were it imported there too
    for checkpoint in ("best", "last"):
        calls.clear()
        run = runs.open_run(trained[1], checkpoint=checkpoint)
        assert calls == [run.weights] and run.weights.is_file(), checkpoint
