"""vaelab's estimators on pythae models (`vaelab.adapters.pythae`), against real pythae.

The adapter's log p(x, z) is checked against pythae's own numbers (its loss is -ELBO, its `get_nll` an IS
estimate), then the estimators against one another on a tiny trained VAE: ELBO <= IS, and AIS within its
replicate error of IS (a 2-D latent space, where 2000 IS samples are accurate to a few hundredths of a nat).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import one_thread  # noqa: F401 (a module-wide fixture)

import vaelab

pythae_models = pytest.importorskip(
    "pythae.models",
    reason="pythae is not installed (the test extra installs it; or pip install --no-deps pythae pydantic cloudpickle)",
)
from vaelab.adapters.pythae import PythaeModel  # noqa: E402
from vaelab.errors import ConfigError  # noqa: E402


def _data(n: int = 96) -> torch.Tensor:
    """Binary 4x4 images: noisy copies of two patterns (halves lit), `[n, 1, 4, 4]`."""
    g = torch.Generator().manual_seed(0)
    patterns = torch.zeros(2, 16)
    patterns[0, :8], patterns[1, 8:] = 0.9, 0.9
    probs = patterns[torch.randint(0, 2, (n,), generator=g)].clamp(min=0.1)
    return torch.bernoulli(probs, generator=g).reshape(n, 1, 4, 4)


def _trained(loss: str, steps: int = 150):
    """A tiny pythae VAE (its default MLPs, 2 latents) trained with its own loss by Adam on `_data`."""
    torch.manual_seed(0)
    net = pythae_models.VAE(pythae_models.VAEConfig(input_dim=(1, 4, 4), latent_dim=2, reconstruction_loss=loss))
    x = _data()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        net({"data": x}).loss.backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, x


@pytest.fixture(scope="module")
def bce():
    return _trained("bce")


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_the_adapter_agrees_with_pythae(loss, bce):
    """-pythae's loss (a one-sample ELBO, averaged here over 200 draws; for mse without the constant D/2 log 2 pi of
    the unit-variance Gaussian) matches vaelab's ELBO, and pythae's
    `get_nll` (IS with 1000 samples per point, looped in Python) matches vaelab's IS, both within 4 Monte Carlo se
    plus 0.02 nats."""
    net, x = bce if loss == "bce" else _trained("mse", steps=30)
    x = x[:6]
    model = PythaeModel(net)
    assert model.likelihood_name == {"bce": "bernoulli", "mse": "gaussian"}[loss]
    torch.manual_seed(1)
    pythae_elbo = -torch.stack([net({"data": x}).loss for _ in range(200)])
    if loss == "mse":
        pythae_elbo -= 16 / 2 * math.log(2 * math.pi)
    out = vaelab.evaluate(model, x, samples=2000, progress=False)
    se = float(pythae_elbo.std()) / 200**0.5 + float(out["per_example"]["elbo"].std()) / 6**0.5 / 30
    assert abs(float(pythae_elbo.mean()) - out["elbo"]) < 4 * se + 0.05, (float(pythae_elbo.mean()), out["elbo"])
    pythae_is = float(net.get_nll(x, n_samples=1000, batch_size=100))
    assert abs(pythae_is - out["log_likelihood"]) < 4 * out["log_likelihood_mc_se"] + 0.02, (pythae_is, out)


def test_ais_and_is_agree_on_a_pythae_vae(bce):
    """On 8 points: ELBO <= IS (every point), and AIS from the prior (4 replicates of 16 chains x 300 temperatures)
    within 4 of its replicate se plus 0.05 nats of IS (2000 samples)."""
    net, x = bce
    model = PythaeModel(net)
    x = x[:8]
    est = vaelab.evaluate(model, x, samples=2000, progress=False)
    per = est["per_example"]
    assert (per["elbo"] <= per["log_likelihood"]).all() and est["elbo"] < est["log_likelihood"]
    options = vaelab.AISOptions(chains=16, temps=300, leapfrog=5, replicates=4, seed=3)
    a = vaelab.ais(model, x, options, progress=False)
    assert a["replicates"] == 4 and a["n_nonfinite"] == 0
    gap = a["log_likelihood"] - est["log_likelihood"]
    assert abs(gap) < 4 * a["log_likelihood_mc_se"] + 0.05, (a["log_likelihood"], est["log_likelihood"], a)
    q = vaelab.ais(model, x, init="posterior", chains=16, temps=100, leapfrog=5, seed=4, progress=False)
    assert abs(q["log_likelihood"] - est["log_likelihood"]) < 0.1


def test_bdmc_on_a_pythae_vae(bce):
    """vaelab.bdmc simulates 8 points from the pythae model (its own `simulate`) and brackets their log p(x):
    lower <= upper on average, gap under 0.5 nats at 200 temperatures in 2-D."""
    model = PythaeModel(bce[0])
    x, z = model.simulate(3)
    assert x.shape == (3, 1, 4, 4) and z.shape == (3, 2) and set(x.unique().tolist()) <= {0.0, 1.0}
    r = vaelab.bdmc(model, 8, chains=16, temps=200, leapfrog=5, seed=5, progress=False)
    assert r["n"] == 8 and r["per_example"]["gap"].shape == (8,)
    assert -0.25 < r["gap"] < 0.5, r


def test_models_the_adapter_cannot_wrap_say_why():
    vamp = pythae_models.VAMP(pythae_models.VAMPConfig(input_dim=(1, 4, 4), latent_dim=2, number_components=2))
    with pytest.raises(ConfigError, match="VampPrior"):
        PythaeModel(vamp)
    with pytest.raises(ConfigError, match="scale"):
        PythaeModel(pythae_models.VAE(pythae_models.VAEConfig(input_dim=(4,), latent_dim=2)), scale=0)


def test_the_adapter_docstring_example_runs():
    import doctest

    import vaelab.adapters.pythae as adapter

    result = doctest.testmod(adapter, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_vaelab_fit_trains_a_wrapped_pythae_model(tmp_path):
    """The wrapper is an nn.Module whose parameters are the pythae model's: vaelab.fit trains it by vaelab's
    objectives (IWAE here) and vaelab.load puts the weights back into a template, identical."""
    x = _data(64)

    def build():
        torch.manual_seed(0)
        net = pythae_models.VAE(pythae_models.VAEConfig(input_dim=(1, 4, 4), latent_dim=2, reconstruction_loss="bce"))
        return PythaeModel(net)

    model = build()
    before = vaelab.evaluate(model, x[:16], samples=200, progress=False)["log_likelihood"]
    model = vaelab.fit(model, "iwae", x, epochs=3, batch_size=16, lr=3e-3, run_dir=tmp_path / "run", progress=False)
    after = vaelab.evaluate(model, x[:16], samples=200, progress=False)["log_likelihood"]
    assert after > before
    loaded = vaelab.load(tmp_path / "run", template=build())
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
