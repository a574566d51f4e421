"""The training step's hot path (`vaelab.train.steps`): no host sync per step, non-finite steps skipped on the device
(fused Adam's `found_inf`) and counted, numerics equal to the plain loop, and the splits' placement on the device."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
from helpers import one_thread  # noqa: F401  (module-wide fixture)

from vaelab import recording
from vaelab.config import load_config
from vaelab.data.supervised import Supervised
from vaelab.errors import TrainingDiverged
from vaelab.train import steps
from vaelab.train.optimizers import grad_sum
from vaelab.train.steps import DeviceData, StepTally, step_unless, takes_found_inf
from vaelab.train.trainer import Trainer, epoch_generator

TINY = [
    "data.subset=240",
    "data.valid_subset=100",
    "data.batch_size=40",  # 6 steps per epoch
    "model.latent_dim=4",
    "model.encoder={type: mlp, hidden: [32]}",
    "model.decoder={type: mlp, hidden: [32]}",
    "train.progress=false",
    "train.lr=1e-3",
    "objective.warmup_epochs=0",
]

#: The ways a tensor's value reaches the host (each one a device sync on CUDA).
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def host_reads():
    """Count the calls of `torch.Tensor` methods that read a value back to the host; yields the list of names."""
    calls: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            return saved[name](self, *args, **kwargs)

        return method

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield calls
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def trainer_for(tmp_path, *extra: str) -> Trainer:
    cfg = load_config(None, [*TINY, *extra])
    run = recording.build_run(cfg, tmp_path)
    return Trainer(cfg, tmp_path, run.model, run.dataset, run.device)


@pytest.mark.parametrize(
    "extra", [[], ["train.optimizer=adam_normgrad", "train.grad_clip=5.0"]], ids=["adam", "normgrad-clip"]
)
@pytest.mark.parametrize("every", [50, 2])
def test_the_step_loop_reads_back_only_every_n_steps_and_at_the_epoch_end(tmp_path, extra, every):
    """6 steps of an epoch read the device back ceil(6 / every) times (1: only at the epoch's end), one transfer
    each; the validation bound once."""
    trainer = trainer_for(tmp_path, *extra)
    assert takes_found_inf(trainer.optimizer)  # fused Adam on the CPU: the skip decided on the device
    trainer.readback_every = every
    trainer.train_epoch(0)  # warm-up: optimiser state, placement of the split
    with host_reads() as calls:
        row = trainer.train_epoch(1)
    assert calls == ["tolist"] * math.ceil(6 / every), calls
    assert row["skipped_steps"] == 0 and math.isfinite(row["train_loss"])
    with host_reads() as calls:
        trainer.validation_loss()
    assert calls == ["__float__"], calls


def test_an_optimizer_without_found_inf_reads_the_flag_back():
    """The fallback (torch's unfused Adam has no `found_inf`): one read, and the step is skipped or taken."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1, foreach=False)
    assert not takes_found_inf(opt)
    p.grad = torch.ones(3)
    with host_reads() as calls:
        step_unless(opt, torch.tensor(True))
    assert calls == ["__bool__"] and torch.equal(p.detach(), torch.ones(3)) and not opt.state
    step_unless(opt, torch.tensor(False))
    assert torch.all(p.detach() < 1)


def _poison(trainer: Trainer, at_steps: set[int]):
    """Make one parameter's gradient NaN at the given global steps (the loss stays finite)."""
    first = next(trainer.model.parameters())
    first.register_hook(lambda g: g * math.nan if trainer.state.step in at_steps else g)


@pytest.mark.parametrize("fused", [True, False])
def test_a_step_with_a_nan_gradient_is_skipped_and_counted(tmp_path, fused):
    """A NaN in one gradient (finite loss): the step leaves the weights and the optimiser state as they were, on the
    device path (fused Adam, `found_inf`) and on the read-back one; the epoch counts it and the weights stay finite."""
    trainer = trainer_for(tmp_path)
    if not fused:
        trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-3, foreach=False)
    x = trainer.train_data(0)[:40]
    trainer._step(x, 1.0, 1.0)  # one good step: the optimiser has state
    trainer.state.step = 7
    _poison(trainer, {7})
    weights = copy.deepcopy(trainer.model.state_dict())
    state = copy.deepcopy(trainer.optimizer.state_dict()["state"])
    loss, taken = trainer._step(x, 1.0, 1.0)
    assert not bool(taken) and math.isfinite(float(loss))
    assert all(torch.equal(weights[k], v) for k, v in trainer.model.state_dict().items())
    after = trainer.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i][k], after[i][k]) for i in state for k in state[i])  # the step count too

    trainer.state.step = 0
    _poison(trainer, {2, 3, 5})
    with pytest.warns(UserWarning, match="skipped 3 step"):
        row = trainer.train_epoch(0)
    assert row["skipped_steps"] == 3 and trainer.state.skipped_steps == 3
    assert trainer.state.nonfinite_streak == 1  # step 5, the last: carried into the next epoch
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_run_of_skipped_steps_stops_at_the_next_read_back(tmp_path):
    """max_nonfinite_steps = 2: steps 1-3 skipped (3 in a row) stop the run at the read-back after step 4, saying so
    as the step-by-step check did; the same steps skipped with one good step between them do not."""
    trainer = trainer_for(tmp_path, "train.max_nonfinite_steps=2")
    trainer.readback_every = 4
    _poison(trainer, {1, 2, 3})
    with pytest.raises(TrainingDiverged, match="epoch 1: 3 consecutive steps had a NaN/Inf"):
        trainer.train_epoch(0)
    assert trainer.state.step == 4  # stopped at the read-back, before the epoch's end

    trainer = trainer_for(tmp_path, "train.max_nonfinite_steps=2")
    _poison(trainer, {1, 2, 4, 5})
    with pytest.warns(UserWarning, match="skipped 4 step"):
        trainer.train_epoch(0)
    assert trainer.state.nonfinite_streak == 2  # steps 4 and 5: carried into the next epoch


def reference_epochs(trainer: Trainer, epochs: int, nan_steps: set[int]) -> tuple[dict, list[float]]:
    """The training loop written out plainly, as the trainer ran before the device-side path: per step the loss and
    the gradient check read back, `optimizer.step()` only when both are finite, the loss summed as Python floats.
    Returns the final weights and each epoch's mean loss."""
    cfg, model = trainer.cfg, trainer.model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.adam_betas),
                                 eps=cfg.train.adam_eps, fused=True)  # fmt: skip
    step, means = 0, []
    for epoch in range(epochs):
        data = trainer.train_data(epoch)
        order = torch.randperm(data.shape[0], generator=epoch_generator(cfg.seed, epoch))
        total, count = 0.0, 0
        for b in range(0, data.shape[0], cfg.data.batch_size):
            loss = -trainer.objective(model, data[order[b : b + cfg.data.batch_size]]).mean()
            if step in nan_steps:
                loss = loss * math.nan
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value, check = loss.item(), grad_sum(model.parameters()).item()
            if math.isfinite(value) and math.isfinite(check):
                optimizer.step()
                total, count = total + value, count + 1
            step += 1
        means.append(total / count)
    return copy.deepcopy(model.state_dict()), means


def test_training_numerics_equal_the_plain_loop(tmp_path):
    """Two epochs (12 steps, steps 0, 4 and 7 with a NaN loss) through the trainer and through `reference_epochs`
    from the same weights and RNG state: bit-identical weights and epoch losses."""
    trainer = trainer_for(tmp_path)
    start = copy.deepcopy(trainer.model.state_dict())
    nan_steps = {0, 4, 7}
    forward = trainer.module.forward
    trainer.module.forward = lambda x, b=1.0, e=1.0: (
        forward(x, b, e) * (math.nan if trainer.state.step in nan_steps else 1.0)
    )
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="skipped"):
        rows = [trainer.train_epoch(e) for e in range(2)]
    got = copy.deepcopy(trainer.model.state_dict())

    trainer.model.load_state_dict(start)
    torch.manual_seed(3)
    want, means = reference_epochs(trainer, 2, nan_steps)
    assert [r["train_loss"] for r in rows] == means
    assert [r["skipped_steps"] for r in rows] == [2, 1]
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(start[k], want[k]) for k in want)  # it trained


def test_step_tally_sums_the_taken_steps_and_the_runs_of_skipped_ones():
    tally = StepTally(torch.device("cpu"), streak=2)  # carried over: the first skipped step makes it 3
    pattern = [(math.nan, False), (1.5, True), (math.inf, False), (2.25, True), (0.0, False)]
    for loss, taken in pattern:
        tally.add(torch.tensor(loss, dtype=torch.float64), torch.tensor(taken))
    assert tally.read() == steps.Tally(loss=3.75, taken=2, skipped=3, streak=1, longest=3)


def test_device_data_on_the_cpu_gives_the_same_batches():
    x = torch.rand(10, 1, 2, 2)
    sup = Supervised(torch.rand(10, 3), torch.arange(10))
    idx = torch.tensor([3, 0, 9, 3])
    for data in (x, sup):
        placed = DeviceData(data, torch.device("cpu"))
        assert placed.on_device and placed.index_device == torch.device("cpu")
        for got, want in ((placed.batch(idx), data[idx]), (placed.rows(2, 5), data[2:5])):
            if isinstance(data, Supervised):
                assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
            else:
                assert torch.equal(got, want)
    placed = DeviceData(x, torch.device("cpu"))
    assert placed.matches(x) and placed.matches(x[:])  # a view of the same storage and shape
    assert not placed.matches(x.clone()) and not placed.matches(x[:5])
    x.mul_(2)  # changed in place: its version moves on
    assert not placed.matches(x)


@pytest.mark.parametrize("fits", [True, False])
def test_device_data_moves_a_split_that_fits_once_else_copies_each_batch(monkeypatch, fits):
    """On another device (here `meta`, shapes only): a split that fits is moved there and indexed there; one that
    does not stays on the host, indexed there, each batch copied over."""
    monkeypatch.setattr(steps, "_fits", lambda nbytes, device: fits)
    x = torch.rand(10, 3)
    placed = DeviceData(x, torch.device("meta"))
    assert placed.on_device == fits
    assert placed.index_device == (torch.device("meta") if fits else torch.device("cpu"))
    batch = placed.batch(torch.arange(4, device=placed.index_device))
    assert batch.device == torch.device("meta") and batch.shape == (4, 3)
    assert placed.rows(2, 7).shape == (5, 3) and placed.rows(2, 7).device == torch.device("meta")


def test_a_new_split_each_epoch_is_placed_anew_and_a_fixed_one_once(tmp_path):
    trainer = trainer_for(tmp_path)
    x = torch.rand(8, 3)
    first = trainer.placed("train", x)
    assert trainer.placed("train", x) is first
    assert trainer.placed("train", x + 1) is not first
