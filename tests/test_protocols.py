"""The declared interfaces (`vaelab.protocols`, the `Objective` hooks): which models and families have which
capability, and that the trainer relies on the hooks' defaults rather than on `hasattr`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vaelab
from vaelab.config import ModelConfig
from vaelab.config.build import OBJECTIVES, build_model
from vaelab.data.supervised import predicts_labels
from vaelab.errors import ConfigError
from vaelab.nets import PixelCNN
from vaelab.objectives import ELBO, Objective
from vaelab.protocols import (
    AmortizedModel,
    Autoregressive,
    AuxiliarySampler,
    GenerativeModel,
    HasPseudoInputs,
    LatentModel,
    MarginalEstimator,
    ReadsCategory,
    Reconstructs,
)


def _model(**overrides) -> nn.Module:
    section = {
        "latent_dim": 2,
        "encoder": {"type": "mlp", "hidden": [8]},
        "decoder": {"type": "mlp", "hidden": [8]},
        "posterior": {"type": "diagonal_gaussian"},
        "prior": {"type": "standard_normal"},
        "likelihood": {"type": "bernoulli"},
        **overrides,
    }
    return build_model(ModelConfig(**section), (6,))


CPVAE_PARTS = {"posterior": {"type": "categorical_gaussian", "categories": 3}, "prior": {"type": "conditional"}}


def test_a_vae_is_a_generative_latent_model():
    model = _model()
    assert isinstance(model, LatentModel) and isinstance(model, GenerativeModel)
    assert not isinstance(model, ReadsCategory)


def test_a_deterministic_classifier_has_no_latent():
    model = build_model(
        ModelConfig(
            type="classifier",
            encoder={"type": "mlp", "hidden": [8]},
            decoder={"type": "linear"},
            likelihood={"type": "categorical", "classes": 3},
        ),
        (6,),
    )
    assert not isinstance(model, LatentModel) and not isinstance(model, Reconstructs)
    assert predicts_labels(model) and not predicts_labels(_model())


def test_model_prior_and_decoder_capabilities():
    """What the gaps (the trained family), `vaelab sample` (reconstructions, pseudo-inputs) and the model builder
    (a decoder that reads x) check, declared instead of found with getattr."""
    vae = _model(prior={"type": "vampprior", "components": 3})
    assert isinstance(vae, AmortizedModel) and isinstance(vae, Reconstructs)
    assert isinstance(vae.prior, HasPseudoInputs) and vae.prior.pseudo_inputs.shape == (3, 6)
    assert not isinstance(_model().prior, HasPseudoInputs)
    pixel = PixelCNN((1, 4, 4), 2, 16, channels=4, layers=1)
    assert isinstance(pixel, Autoregressive) and not isinstance(nn.Linear(2, 2), Autoregressive)
    section = {"latent_dim": 2, "encoder": {"type": "mlp", "hidden": [8]}, "posterior": {"type": "diagonal_gaussian"}}
    with pytest.raises(ConfigError, match="reads x itself"):
        build_model(ModelConfig(**section, decoder={"type": "pixelcnn", "channels": 4, "layers": 1}), (1, 4, 4))


def test_only_a_decoder_on_z_and_c_reads_the_category():
    reads = _model(**CPVAE_PARTS, options={"decoder_input": "z_and_c"})
    plain = _model(**CPVAE_PARTS, options={"decoder_input": "z"})
    assert isinstance(reads, ReadsCategory) and reads.categories == 3
    assert not isinstance(plain, ReadsCategory)


def test_posterior_capabilities():
    flow = _model(posterior={"type": "auxiliary_flow"})
    q = flow.posterior(torch.rand(4, 6).round())
    assert isinstance(q, AuxiliarySampler) and isinstance(q, MarginalEstimator)
    gaussian = _model().posterior(torch.rand(4, 6).round())
    assert not isinstance(gaussian, AuxiliarySampler) and not isinstance(gaussian, MarginalEstimator)


def test_a_model_from_elsewhere_is_a_latent_model_by_its_methods():
    class Elsewhere:
        def posterior(self, x):
            return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(len(x), 2), 1.0), 1)

        def log_joint(self, x, z):
            return -0.5 * (z**2).sum(-1)

    assert isinstance(Elsewhere(), LatentModel) and not isinstance(Elsewhere(), GenerativeModel)


def test_objective_hooks_have_no_op_defaults():
    class Plain(Objective):
        def __call__(self, model, x, beta=1.0, entropy_weight=1.0):
            return ELBO()(model, x, beta, entropy_weight)

    o = Plain()
    assert o.param_groups(nn.Linear(2, 2)) is None
    assert o.epoch_metrics() == {} and o.state_dict() == {} and o.burn_in_epochs == 0
    o.set_epoch(3)
    o.load_state_dict({})
    assert all(isinstance(OBJECTIVES.build(name), Objective) for name in ("elbo", "iwae", "siwae", "cpvae"))


def test_fit_refuses_an_objective_that_is_not_an_objective(tmp_path):
    model = _model()
    x = torch.rand(20, 6).round()
    with pytest.raises(ConfigError, match="or an Objective"):
        vaelab.fit(model, lambda m, x, *a: m.log_joint(x, m.posterior(x).rsample()), x, epochs=1, run_dir=tmp_path)


def test_the_estimators_take_a_decoded_model_as_it_is_and_any_other_through_posterior_and_log_joint():
    """`vaelab.measure.as_estimable`: a vaelab VAE (a `DecodedModel`) unchanged; a `LatentModel` from elsewhere as a
    `JointOnly` view of its data's width; anything else a `ConfigError`; AIS starts at the prior of a
    `GenerativeModel` only."""
    from vaelab.measure import JointOnly, _ais_options, as_estimable
    from vaelab.protocols import DecodedModel

    model, x = _model(), torch.zeros(3, 6)
    assert isinstance(model, DecodedModel) and as_estimable(model, x) is model

    class Elsewhere:
        def posterior(self, x):
            return model.posterior(x)

        def log_joint(self, x, z):
            return model.log_joint(x, z)

    view = as_estimable(Elsewhere(), x)
    assert isinstance(view, JointOnly) and view.likelihood.num_outputs == 6
    assert not isinstance(Elsewhere(), DecodedModel)
    with pytest.raises(ConfigError, match="posterior"):
        as_estimable(nn.Linear(2, 2), x)
    assert _ais_options(model, None, None, {}).init == "prior"
    assert _ais_options(Elsewhere(), None, None, {}).init == "posterior"
