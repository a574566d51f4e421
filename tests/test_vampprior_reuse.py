"""VampPrior: the pseudo-input encoder pass is reused across `log_prob` calls only while its result cannot
have changed (gradients off, eval mode, unchanged parameters and buffers), and reuse changes no value."""

from __future__ import annotations

import pytest
import torch

from vaelab.evaluation.loglik import importance_sampled_log_likelihood

K = 6


def _model(**prior_options):
    from vaelab.config import load_config
    from vaelab.config.build import build_model

    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder={type: mlp, hidden: [16]}",
            "model.decoder={type: mlp, hidden: [16]}",
            "model.prior=" + str({"type": "vampprior", "components": K, **prior_options}).replace("'", ""),
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 4, 4)).double()
    with torch.no_grad():
        model.prior.raw_inputs.uniform_(0, 1)  # distinct components
    return model


def _count_pseudo_passes(model) -> list[int]:
    """A one-element list counting encoder calls on the K pseudo-inputs."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += inputs[0].shape[0] == K

    model.encoder.register_forward_hook(hook)
    return calls


def _fresh(model, z):
    """log p(z) computed from scratch (with gradients on nothing is reused)."""
    with torch.enable_grad():
        return model.prior.log_prob(z).detach()


def test_reused_in_eval_without_grad_and_equal_to_a_fresh_pass():
    model = _model(learn_weights=True).eval()
    calls = _count_pseudo_passes(model)
    z1, z2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        a, b = model.prior.log_prob(z1), model.prior.log_prob(z2)
    assert calls[0] == 1
    torch.testing.assert_close(a, _fresh(model, z1), rtol=0, atol=0)
    torch.testing.assert_close(b, _fresh(model, z2), rtol=0, atol=0)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: next(m.encoder.parameters()).add_(0.1),  # the encoder body
        lambda m: m.posterior_family.head.bias.sub_(0.2),  # the Gaussian head
        lambda m: m.prior.raw_inputs.mul_(0.5),  # the pseudo-inputs
        lambda m: m.prior.logits.copy_(torch.arange(K, dtype=torch.float64)),  # the mixture weights
        lambda m: m.load_state_dict({k: v + 0.05 for k, v in m.state_dict().items()}),
    ],
)
def test_any_in_place_change_of_what_it_reads_is_seen(change):
    model = _model(learn_weights=True).eval()
    calls = _count_pseudo_passes(model)
    z = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        before = model.prior.log_prob(z)
        change(model)
        after = model.prior.log_prob(z)
    assert calls[0] == 2
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _fresh(model, z), rtol=0, atol=0)


def test_optimizer_steps_and_dtype_changes_are_seen():
    model = _model().eval()
    calls = _count_pseudo_passes(model)
    z = torch.randn(7, 3, dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    with torch.no_grad():
        before = model.prior.log_prob(z)
    model.prior.log_prob(z).sum().backward()
    opt.step()
    with torch.no_grad():
        after = model.prior.log_prob(z)
    assert calls[0] == 3 and not torch.allclose(before, after)
    torch.testing.assert_close(after, _fresh(model, z), rtol=0, atol=0)
    model.float()
    with torch.no_grad():
        single = model.prior.log_prob(z.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single, _fresh(model, z.float()), rtol=0, atol=0)


def test_nothing_reused_with_gradients_or_in_training_mode():
    model = _model()
    calls = _count_pseudo_passes(model)
    z = torch.randn(4, 3, dtype=torch.float64)
    model.eval()
    for _ in range(2):  # gradients on: every call encodes and the gradient reaches the pseudo-inputs
        model.prior.log_prob(z).sum().backward()
    assert calls[0] == 2 and model.prior.raw_inputs.grad.abs().sum() > 0
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.prior.log_prob(z)
    assert calls[0] == 4


def test_importance_sampling_encodes_the_pseudo_inputs_once_with_unchanged_estimate():
    model = _model().eval()
    calls = _count_pseudo_passes(model)
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.3, dtype=torch.float64))
    torch.manual_seed(1)
    est = importance_sampled_log_likelihood(model, x, samples=40, max_elements=3 * 1024 * 4)  # 10 chunks of 4
    assert calls[0] == 1
    # the reference: the same draws with a posterior the prior cannot see into (a plain function), so that
    # every chunk encodes the pseudo-inputs again
    posterior = model.prior._posterior
    object.__setattr__(model.prior, "_posterior", lambda u: posterior(u))
    torch.manual_seed(1)
    ref = importance_sampled_log_likelihood(model, x, samples=40, max_elements=3 * 1024 * 4)
    assert calls[0] == 11
    torch.testing.assert_close(est.log_likelihood, ref.log_likelihood, rtol=0, atol=0)
    torch.testing.assert_close(est.ess, ref.ess, rtol=0, atol=0)
