"""SIWAE's VAE experiments (sec. 4.3, app. C.4-C.5, D.3): the networks they need (an encoder that reads only the
centre column, TF Probability's (de)convolutions, an affine skip connection) and the posterior pictures that
`vaelab sample` writes (decoded component modes, Fig. C.6; 2-D latent draws over p(z|x)), against direct
computation; and one tiny run of the column config end to end."""

from __future__ import annotations

import pytest
import torch

from vaelab.app.cli import main
from vaelab.config import load_config
from vaelab.config.build import build_model
from vaelab.config.registry import NETWORKS
from vaelab.errors import ConfigError
from vaelab.viz.posterior_pictures import component_mode_images, log_joint_on_grid

IMAGE = (1, 28, 28)


def test_columns_encoder_sees_exactly_the_chosen_columns_top_to_bottom():
    x = torch.rand(5, *IMAGE)
    identity = {"type": "linear"}  # no layers: the encoder body passes its input through
    net = NETWORKS.build("columns", {"body": identity}, in_features=784, out_features=None, event_shape=IMAGE)
    assert net.out_features == 28 and torch.equal(net(x.flatten(1)), x[:, 0, :, 14])  # as mnist_column holds it
    two = NETWORKS.build(
        "columns", {"columns": [3, 14], "body": identity}, in_features=784, out_features=None, event_shape=IMAGE
    )
    assert torch.equal(two(x.flatten(1)), x[:, 0, :, [3, 14]].flatten(1))
    assert torch.equal(two(x.flatten(1)[None]), two(x.flatten(1))[None])  # leading dimensions are kept
    mlp = {"type": "mlp", "hidden": [16], "activation": "elu"}
    assert (
        NETWORKS.build("columns", {"body": mlp}, in_features=784, out_features=None, event_shape=IMAGE).out_features
        == 16
    )
    for options, message in [({"columns": [28], "body": identity}, "column indices in 0..27"), ({}, "needs body")]:
        with pytest.raises(ConfigError, match=message):
            NETWORKS.build("columns", options, in_features=784, out_features=None, event_shape=IMAGE)


def test_affine_skip_adds_an_affine_map_of_the_latent_to_the_body():
    body = {"type": "mlp", "hidden": [8], "activation": "tanh"}
    net = NETWORKS.build("affine_skip", {"body": body}, in_features=2, out_features=784, event_shape=IMAGE).double()
    z = torch.randn(3, 4, 2, dtype=torch.float64)
    expected = net.body(z) + z @ net.skip.weight.T + net.skip.bias
    assert net(z).shape == (3, 4, 784) and torch.allclose(net(z), expected, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="use it as a decoder"):
        NETWORKS.build("affine_skip", {"body": body}, in_features=784, out_features=None, event_shape=IMAGE)


def test_tfp_conv_networks_map_images_to_features_and_latents_to_28x28_maps():
    enc = NETWORKS.build(
        "tfp_conv_encoder", {"base_depth": 4, "features": 6}, in_features=784, out_features=None, event_shape=IMAGE
    )
    x = torch.rand(3, 784)
    assert enc(x).shape == (3, 6) and torch.allclose(enc(x.reshape(3, *IMAGE)), enc(x))
    dec = NETWORKS.build("tfp_conv_decoder", {"base_depth": 4}, in_features=2, out_features=2 * 784, event_shape=IMAGE)
    z = torch.randn(5, 3, 2)
    out = dec(z)
    assert out.shape == (5, 3, 2 * 784)
    assert torch.allclose(out[1, 2], dec(z[1, 2][None])[0], atol=1e-6)  # batched = one at a time
    sizes = [m.weight.shape for m in dec.body if hasattr(m, "weight")]
    assert sizes[0] == (2, 8, 7, 7) and sizes[-1] == (2, 4, 5, 5)  # z -> 7x7 ('valid' 7x7), ..., conv to 2 maps
    with pytest.raises(ConfigError, match="divisible by 4"):
        NETWORKS.build("tfp_conv_decoder", {}, in_features=2, out_features=28 * 30, event_shape=(1, 28, 30))


def _column_vae(components: int = 3):
    cfg = load_config("configs/siwae/vae_mnist_column_2d.yaml", [f"model.posterior.components={components}"], "quick")
    return build_model(cfg.model, IMAGE).eval()


def test_mode_images_decode_each_component_mean_by_decreasing_weight():
    model = _column_vae(3)
    x = torch.bernoulli(torch.rand(4, *IMAGE))
    images = component_mode_images(model, x)
    assert images.shape == (4, 4, *IMAGE) and torch.equal(images[:, 0], x)
    q = model.posterior(x)
    for b in range(4):
        order = q.log_weights[b].argsort(descending=True)
        for j, k in enumerate(order):
            mu = q.component_distribution.mean[b, k]
            assert torch.allclose(images[b, 1 + j], model.likelihood.mean(model.decode(mu[None]))[0], atol=1e-6)


def test_log_joint_on_grid_is_log_p_x_z_up_to_its_maximum_in_chunks():
    model = _column_vae(2)
    x = torch.bernoulli(torch.rand(*IMAGE))
    z = torch.randn(25, 2)
    got = log_joint_on_grid(model, x, z, chunk=7)
    direct = model.log_joint(x[None], z[:, None])[:, 0].double()
    assert got.dtype == torch.float64 and torch.allclose(got, direct - direct.max(), atol=1e-4) and got.max() == 0


def test_column_vae_trains_evaluates_and_draws_its_posterior_pictures(tmp_path, capsys):
    tiny = [
        "--set",
        "train.epochs=1",
        "--set",
        "data.subset=64",
        "--set",
        "eval.subset=20",
        "--set",
        "eval.is_samples=10",
    ]
    tiny += ["--set", "train.validate_every=1", "--set", "data.valid_subset=64", "--set", "eval.grid=2"]
    args = ["train", "configs/siwae/vae_mnist_column_2d.yaml", "--budget", "quick", "--run-dir", str(tmp_path)]
    assert main([*args, *tiny, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "SIWAE evidence" in out and "(5 components x 2 draws)" in out
    for name in ("modes-test.png", "posterior-test.png", "reconstructions.png", "eval-test.json"):
        assert (tmp_path / name).is_file(), name
