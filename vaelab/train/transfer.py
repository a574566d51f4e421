"""Train part of a model against parts taken from another run: `train.init_from` and `train.freeze`.

Cremer et al. (2018, sec. 5.2.1 and appendix 6.2) keep a trained decoder fixed and train new encoders on it,
so that the true posterior is the same for every encoder:

    train: {init_from: runs/table2_mnist_ffg, freeze: [prior, decoder, likelihood]}

`init_from` copies the generative model p(x, z) (the `prior`, `decoder` and `likelihood` modules) from the
run's best weights (else its latest checkpoint); the shapes must match. `freeze` turns off gradients of the
named parts, so the optimiser never changes them (Adam skips parameters without gradients). The new run's
own checkpoints hold the whole model, so it does not need the source run afterwards.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vaelab.errors import ConfigError, RunDirError
from vaelab.train.checkpoint import latest_checkpoint, read_weights

#: The modules of a VAE that make up the generative model p(x, z) = p(z) p(x | z).
GENERATIVE_PARTS = ("prior", "decoder", "likelihood")


def run_weights(run_dir: str | Path) -> Path:
    """The weights file of a run: `best.safetensors`, else the latest checkpoint's."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"train.init_from: run directory {str(path)!r} does not exist; train that run first")
    best = path / "best.safetensors"
    if best.is_file():
        return best
    last = latest_checkpoint(path / "checkpoints")
    if last is None:
        raise RunDirError(f"train.init_from: run {str(path)!r} has no saved weights yet; train it first")
    return last / "model.safetensors"


def init_generative_from(model: nn.Module, run_dir: str | Path, parts: tuple[str, ...] = GENERATIVE_PARTS) -> list[str]:
    """Copy the tensors of `parts` (default: the generative model) from the run in `run_dir` into `model`.
    Every such tensor must exist there with the same shape. Returns the names copied."""
    source = read_weights(run_weights(run_dir))  # checked against its sha256
    own = model.state_dict()
    wanted = [k for k in own if k.split(".", 1)[0] in parts]
    for k in wanted:
        if k not in source:
            raise ConfigError(f"train.init_from: {run_dir} has no {k!r}; its model must have the same {parts}")
        if source[k].shape != own[k].shape:
            raise ConfigError(
                f"train.init_from: {k!r} is {tuple(source[k].shape)} in {run_dir} but {tuple(own[k].shape)} here; "
                "use the same decoder, prior and likelihood as that run"
            )
    model.load_state_dict({k: source[k] for k in wanted}, strict=False)
    return wanted


def freeze(model: nn.Module, names: list[str]) -> None:
    """Turn off gradients of the named top-level parts of `model` (e.g. `decoder`)."""
    children = dict(model.named_children())
    for name in names:
        if name not in children:
            raise ConfigError(f"train.freeze: the model has no part {name!r}; its parts: {', '.join(children)}")
        children[name].requires_grad_(False)
