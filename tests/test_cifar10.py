"""CIFAR-10 and Cremer et al.'s Table 9 networks: the dataset read from files in the real python-pickle format (a
small synthetic copy, accepted by patching the checksums it must have), checksums refused, the strided
(de)convolutions' shapes, the discretized logistic with channel-wise scales, batch norm in eval mode for every
estimator, and the two Table 2 CIFAR-10 configs trained and evaluated on synthetic 3 x 32 x 32 data."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import load_config
from vaelab.config.build import build_model
from vaelab.data import DATASETS, catalog, load_dataset
from vaelab.data.sources import ChecksumMismatch
from vaelab.errors import ConfigError, CorruptFile, DatasetNotFound
from vaelab.evaluation.annealed import evaluate_ais
from vaelab.evaluation.gaps import measure_gaps
from vaelab.evaluation.loglik import evaluate_log_likelihood
from vaelab.mcmc.options import AISOptions
from vaelab.nets import StridedConvEncoder, StridedDeconvDecoder
from vaelab.nets.modes import eval_mode

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cremer"
PER_BATCH, TEST = 1002, 30  # 5 x 1,002 training images: the first 5,000 held out, 10 left to train on
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _batch(rng: np.random.Generator, n: int, label: str) -> dict:
    """One batch as the CIFAR python version stores it: uint8 rows of 1,024 red, green, blue values."""
    return {
        "batch_label": label,
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def cifar_files(seed: int = 0) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The seven files of `cifar-10-batches-py` (pickled, protocol 2) and the dicts they hold."""
    rng = np.random.default_rng(seed)
    content = {name: _batch(rng, PER_BATCH, f"training batch {i + 1} of 5") for i, name in enumerate(BATCHES)}
    content["test_batch"] = _batch(rng, TEST, "testing batch 1 of 1")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    content["batches.meta"] = {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072}
    return {name: pickle.dumps(d, protocol=2) for name, d in content.items()}, content


def tarball(files: dict[str, bytes]) -> bytes:
    """`cifar-10-python.tar.gz`: the files under `cifar-10-batches-py/`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=1)


def accepting(monkeypatch, files: dict[str, bytes]) -> None:
    """Register `cifar10` with these files' md5s in place of the real ones (same names, parser and splits)."""
    spec = catalog.CIFAR10
    variants = []
    for v in spec.variants:
        fs = tuple(
            dataclasses.replace(f, checksums=(f"md5:{hashlib.md5(files[f.name]).hexdigest()}",), urls=())
            if f.name in files
            else f
            for f in v.files
        )
        variants.append(dataclasses.replace(v, files=fs))
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(spec, variants=tuple(variants)))


@pytest.fixture
def synthetic_tar(tmp_path, monkeypatch):
    """A data directory holding a synthetic `cifar-10-python.tar.gz` that `cifar10` accepts; the batches' dicts."""
    files, content = cifar_files()
    archive = tarball(files)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(archive)
    accepting(monkeypatch, {"cifar-10-python.tar.gz": archive})
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setenv("VAELAB_DOWNLOAD", "0")
    return tmp_path, content


def test_tarball_is_read_to_images_splits_and_levels(synthetic_tar):
    _, content = synthetic_tar
    ds = load_dataset("cifar10")
    assert ds.event_shape == (3, 32, 32) and ds.value_kind == "gray"
    assert ds.sizes == {"train": 5 * PER_BATCH - 5000, "valid": 5000, "test": TEST}
    assert "tar" in ds.source and "first 5,000" in ds.source
    image = lambda batch, i: torch.from_numpy(content[batch]["data"][i].reshape(3, 32, 32).astype(np.float32))  # noqa: E731
    assert torch.equal(ds.split("valid")[0] * 255, image("data_batch_1", 0))  # row: 1,024 R, then G, then B
    assert torch.equal(ds.split("valid")[-1] * 255, image("data_batch_5", 5000 - 4 * PER_BATCH - 1))
    assert torch.equal(ds.split("train")[0] * 255, image("data_batch_5", 5000 - 4 * PER_BATCH))
    assert torch.equal(ds.split("test")[-1] * 255, image("test_batch", TEST - 1))
    for split in ("train", "valid", "test"):
        x = ds.split(split)
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x * 255, (x * 255).round())  # levels k/255: "rescaled to [0, 1]", not binarized
    labels = [v for b in BATCHES for v in content[b]["labels"]]
    assert ds.labels("valid").tolist() == labels[:5000] and ds.labels("train").tolist() == labels[5000:]


def test_extracted_batches_in_torchvision_layout_are_read_alike(tmp_path, monkeypatch):
    files, content = cifar_files(seed=1)
    d = tmp_path / "cifar-10-batches-py"  # torchvision's root layout: $VAELAB_DATA/cifar-10-batches-py/
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    accepting(monkeypatch, files)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    ds = load_dataset("cifar10")
    assert "cifar-10-batches-py" in ds.source and ds.sizes["valid"] == 5000
    first = content["data_batch_1"]["data"][0].reshape(3, 32, 32)
    assert torch.equal(ds.split("valid")[0] * 255, torch.from_numpy(first.astype(np.float32)))


def test_wrong_checksum_is_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(tarball(cifar_files()[0]))
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    with pytest.raises(
        ChecksumMismatch, match=r"checksum mismatch .*cifar-10-python.tar.gz.*md5:c58f30108f718f92"
    ) as e:
        load_dataset("cifar10")  # the real spec: the synthetic archive is not the official one
    assert "vaelab datasets --download cifar10" in str(e.value)


def test_missing_data_says_where_it_looked_and_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VAELAB_DOWNLOAD", "0")
    with pytest.raises(DatasetNotFound, match=r"downloads are off.*vaelab datasets --download cifar10"):
        load_dataset("cifar10")
    assert DATASETS["cifar10"].download_variant.files[0].urls == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    )


def test_pickles_of_anything_but_arrays_are_refused(tmp_path, monkeypatch):
    files, _ = cifar_files()

    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    files["test_batch"] = pickle.dumps({"data": Payload()}, protocol=2)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(archive := tarball(files))
    accepting(monkeypatch, {"cifar-10-python.tar.gz": archive})
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    with pytest.raises(CorruptFile, match=r"refusing to load \w+\.print"):
        load_dataset("cifar10")


@pytest.mark.needs_dataset("cifar10")
def test_real_cifar10_splits():
    ds = load_dataset("cifar10")
    assert ds.sizes == {"train": 45000, "valid": 5000, "test": 10000}
    assert ds.split("test").shape == (10000, 3, 32, 32)
    counts = torch.bincount(torch.cat([ds.labels("train"), ds.labels("valid")]), minlength=10)
    assert counts.tolist() == [5000] * 10


# --- Table 9's networks -----------------------------------------------------------------------------------------


def test_table9_networks_map_shapes():
    enc = StridedConvEncoder((3, 32, 32))
    sizes = []
    for layer in enc.body:
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    x = torch.rand(5, 3 * 32 * 32)
    assert enc(x).shape == (5, 1024) and enc.out_features == 256 * 2 * 2
    assert sizes == [(64, 15, 15), (128, 6, 6), (256, 2, 2)]
    assert torch.equal(enc.eval()(x), enc(x.reshape(5, 3, 32, 32)))
    dec = StridedDeconvDecoder(32, 2 * 3 * 32 * 32, (3, 32, 32))
    deconvs = [m for m in dec.body if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.output_padding for m in deconvs] == [(0, 0), (1, 1), (0, 0)]  # the authors' cvae.py
    assert [m.out_channels for m in deconvs] == [128, 64, 3] and dec.map_shape == (256, 2, 2)
    out = dec(torch.randn(4, 5, 32)).reshape(4, 5, 2, 3, 32, 32)  # [S, B, (loc, log-scale), C, H, W]
    log_scale = out[:, :, 1]
    assert torch.equal(log_scale, log_scale[..., :1, :1].expand_as(log_scale))  # one scale per channel
    assert not torch.equal(log_scale[:, :, 0], log_scale[:, :, 1])
    assert StridedDeconvDecoder(32, 3 * 28 * 28, (3, 28, 28), scale_hidden=None)(torch.randn(2, 32)).shape == (2, 2352)


def test_decoder_outputs_must_fit_the_likelihood():
    with pytest.raises(ConfigError, match="scale_hidden: null"):
        StridedDeconvDecoder(32, 3 * 32 * 32, (3, 32, 32))  # a Bernoulli's outputs with channel-wise scales
    with pytest.raises(ConfigError, match="do not fit 8 pixels"):
        StridedConvEncoder((3, 8, 8), channels=(8, 8, 8))


@pytest.mark.parametrize("name", ["table2_cifar10_ffg", "table2_cifar10_flow"])
def test_decoder_gives_a_discretized_logistic(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = build_model(cfg.model, (3, 32, 32)).eval()
    assert model.latent_dim == 32
    lik = model.likelihood
    params = model.decoder(torch.randn(1, 32)).reshape(1, *lik.param_shape)  # [1, 2, 3, 32, 32]
    levels = torch.arange(256.0).div(255).reshape(256, 1, 1, 1).expand(256, 3, 32, 32)
    log_p = lik.log_prob_elements(levels, params.expand(256, *lik.param_shape))  # [256 levels, 3, 32, 32]
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    total = torch.logsumexp(log_p.double(), 0)  # each pixel's 256 probabilities sum to one
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-5)
    x = torch.randint(0, 256, (2, 3, 32, 32)) / 255
    assert model.log_joint(x, torch.randn(7, 2, 32)).shape == (7, 2)


# --- batch norm: estimators run the model in eval mode ----------------------------------------------------------


def _trained_bn_model() -> torch.nn.Module:
    cfg = load_config(CONFIGS / "table2_cifar10_ffg.yaml")
    model = build_model(cfg.model, (3, 32, 32))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randint(0, 256, (8, 3, 32, 32)) / 255
    for _ in range(2):  # a few steps in train mode: the running statistics move away from their start
        opt.zero_grad()
        q = model.posterior(x)
        z = q.rsample((2,))
        (q.log_prob(z) - model.log_joint(x, z)).mean().backward()
        opt.step()
    return model


def _bn_state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers() if "running" in n]


def test_estimators_run_in_eval_mode_and_leave_the_model_as_it_was():
    model, x = _trained_bn_model(), torch.randint(0, 256, (6, 3, 32, 32)) / 255
    before = _bn_state(model)
    assert model.training
    with eval_mode(model):
        reference = evaluate_log_likelihood(model, x, samples=4, batch_size=3, progress=False, batch_seed=1)
    got = evaluate_log_likelihood(model, x, samples=4, batch_size=3, progress=False, batch_seed=1)
    assert torch.equal(got.log_likelihood, reference.log_likelihood)  # not the batch statistics of train mode
    assert model.training and all(m.training for m in model.modules())  # each module's mode restored
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_state(model), strict=True))
    evaluate_ais(model, x[:2], AISOptions(chains=2, temps=3, leapfrog=1, seed=0), progress=False)
    result = measure_gaps(model, x[:2], load_config(None, ["gaps.families=[ffg]", "gaps.max_steps=3",
                          "gaps.samples=2", "gaps.eval_samples=4", "gaps.ais_temperatures=0"]).gaps,
                          progress=False, seed=0)  # fmt: skip
    assert result is not None and torch.isfinite(result.log_p).all()
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, _bn_state(model), strict=True))


# --- the configs, end to end on synthetic data -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["table2_cifar10_ffg", "table2_cifar10_flow"])
def test_configs_train_and_evaluate_on_synthetic_cifar(name, synthetic_tar, tmp_path):
    from vaelab.app import runs

    small = ["data.subset=10", "data.valid_subset=10", "data.batch_size=5", "data.eval_batch_size=10",
             "train.epochs=2", "eval.subset=4", "eval.is_samples=4", "train.progress=false"]  # fmt: skip
    cfg = load_config(CONFIGS / f"{name}.yaml", small, budget="quick")
    assert cfg.data.name == "cifar10" and cfg.objective.entropy_annealing_epochs == 2
    run = runs.train(cfg, tmp_path / name)
    assert not run.model.training  # the trained model is handed back in eval mode
    metrics = [line for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines() if line]
    assert len(metrics) == 2 and '"valid_loss"' in metrics[-1]
    before = _bn_state(run.model)
    out = runs.evaluate(run, "test", samples=4, subset=4, progress=False)
    assert np.isfinite(out["log_likelihood"]) and out["log_likelihood"] < 0 and out["n"] == 4
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_state(run.model), strict=True))
