"""The training loop: Adam, warm-up schedules, validation with early stopping, atomic checkpoints every
N epochs, exact resume, non-finite step detection, JSON-lines metrics and progress bars.

Determinism: the data order of epoch e is a permutation drawn from a generator seeded with (seed, e), the
dataset's dynamic binarization is seeded the same way, and the global torch RNG (used for latent samples)
is saved in every checkpoint. A run resumed from the checkpoint after epoch e therefore continues exactly
as the uninterrupted run would.

Distributed (a process group running, e.g. `torchrun ... -m vaelab train`; `vaelab.distributed`): the loss is
computed by `TrainingModule.forward`, which is wrapped in `DistributedDataParallel`, so the gradients are averaged
over the ranks. Each rank takes its `vaelab.distributed.shard` of the epoch's permutation (padded to a multiple of
the world size, as `DistributedSampler` does), so every rank takes the same number of steps; the per-rank batch is
`data.batch_size` and the effective batch `world * data.batch_size`. Each step's loss and gradient check are
all-reduced, so every rank skips the same non-finite steps, and the validation bound (with the diagnostics of
`vaelab.train.diagnostics`, a CP-VAE's category use) is summed over the ranks' blocks of the validation set, so
early stopping decides the same everywhere. Rank r's global RNG (latent draws) is
reseeded at the start of epoch e from (seed, "rank", r, e), so ranks draw independent noise and a resume continues
exactly for any world size. Only rank 0 writes (metrics, checkpoints, best weights, TensorBoard). One process
(world size 1) is unchanged: one global RNG stream, saved in each checkpoint.

No host synchronisation per step (`vaelab.train.steps`, the same code on the CPU and on CUDA): the non-finite check
stays on the device and a fused Adam skips the step on it (`found_inf`); the epoch's loss, step counts and run of
skipped steps are summed on the device and read back every `Trainer.readback_every` steps (the progress bar, and the
stop after `train.max_nonfinite_steps` consecutive skipped steps) and at the epoch's end. The training and
validation splits are moved to the device once where they fit and batched there by index.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from vaelab import distributed, progress
from vaelab.config import Config
from vaelab.config.build import OBJECTIVES, build_schedule
from vaelab.data.dataset import derive_seed
from vaelab.errors import ConfigError, CorruptRunFile, RunDirError, TrainingDiverged
from vaelab.objectives import Objective, linear_ramp
from vaelab.train.burn_in import burn_in
from vaelab.train.checkpoint import checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint, save_weights
from vaelab.train.diagnostics import validation_diagnostics
from vaelab.train.optimizers import build_optimizer
from vaelab.train.steps import DeviceData, StepTally, Tally, checked_step, tally_dtype
from vaelab.train.transfer import freeze, init_generative_from


@dataclass
class TrainState:
    """Counters saved with each checkpoint. `epoch` counts completed epochs."""

    epoch: int = 0
    step: int = 0
    best_valid_loss: float = math.inf
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    skipped_steps: int = 0
    nonfinite_streak: int = 0  # consecutive skipped steps, counted across epochs (and resumes)
    finished: bool = False
    stop_reason: str = ""


class TrainingModule(nn.Module):
    """model + objective as one module whose forward returns the per-example bound `[B]` (DDP-ready)."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return self.objective(self.model, x, beta, entropy_weight)


def build_objective(cfg: Config) -> Objective:
    return OBJECTIVES.build(cfg.objective.type, cfg.objective.options)


def finite_weights(model: nn.Module) -> bool:
    """Whether every parameter of `model` is finite (no NaN or Inf); one host sync."""
    checks = [p.detach().isfinite().all() for p in model.parameters()]
    return not checks or bool(torch.stack([c.to(checks[0].device) for c in checks]).all())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """Trains `model` on `dataset` (`.split("train", epoch=e)`, `.split("valid")`: tensors `[N, *event]`) as `cfg`
    says, writing into `run_dir`. With `resuming`, a checkpoint in `run_dir` will be loaded (`resume`), so
    `train.init_from` is skipped when there is one. `objective`: an `Objective` object instead of the one
    `cfg.objective` names (the Python API's `vaelab.fit`)."""

    #: Steps between reads of the epoch's device-side sums (progress bar, the non-finite stop); also at its end.
    readback_every: int = 50

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        model: nn.Module,
        dataset,
        device: torch.device,
        resuming: bool = False,
        objective: Objective | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.model, self.dataset, self.device = cfg, Path(run_dir), model, dataset, device
        if cfg.train.early_stopping and not getattr(dataset, "valid_held_out", True):
            raise ConfigError(
                f"dataset {cfg.data.name!r} validates on part of its training set, so early stopping on it would "
                "select on training data; set train.early_stopping: null"
            )
        if cfg.train.init_from and not (resuming and latest_checkpoint(self.run_dir / "checkpoints") is not None):
            init_generative_from(model, cfg.train.init_from)  # e.g. a decoder kept fixed (Cremer et al. 5.2.1)
        freeze(model, cfg.train.freeze)  # before the optimiser and DDP see the parameters
        self.objective = build_objective(cfg) if objective is None else objective
        if not isinstance(self.objective, Objective):
            raise ConfigError(
                f"the objective must be a vaelab.Objective (subclass it: its optional hooks have defaults), "
                f"not {type(self.objective).__name__}"
            )
        self.module: nn.Module = TrainingModule(model, self.objective)
        self.rank, self.world = distributed.world()
        if self.world > 1:  # averages the gradients over ranks; broadcasts rank 0's weights and buffers now
            ids = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
            self.objective.set_rank_mean(distributed.all_mean)  # e.g. AIWAE's step sizes, the same on every rank
        self.optimizer = build_optimizer(cfg, model, self.objective)
        self._lr_schedule = build_schedule(cfg.train.lr_schedule)  # a bad one fails now, before the run dir is written
        self.state = TrainState()
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._placed: dict[str, DeviceData] = {}  # the splits on the device, while the dataset gives the same ones
        self.on_checkpoint: Callable[[], None] = lambda: None  # hook: called on rank 0 after each checkpoint

    # --- data -------------------------------------------------------------------------------------------
    def train_data(self, epoch: int) -> Tensor:
        x = self.dataset.split("train", epoch=epoch)
        return x[: self.cfg.data.subset] if self.cfg.data.subset else x

    def valid_data(self) -> Tensor:
        x = self.dataset.split("valid")
        return x[: self.cfg.data.valid_subset] if self.cfg.data.valid_subset else x

    def placed(self, split: str, data) -> DeviceData:
        """The split `split`'s `data` as `DeviceData` on the trainer's device: moved there once (where it fits) and
        kept while the dataset gives the same tensor unchanged (a new binarization each epoch is moved anew)."""
        held = self._placed.get(split)
        if held is None or not held.matches(data):
            self._placed.pop(split, None)
            held = None  # the old copy freed before the new one is made
            held = self._placed[split] = DeviceData(data, self.device)
        return held

    # --- resume -----------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the latest checkpoint if there is one (an unreadable one, failing its sha256 or truncated, falls back
        to the one before, saying so; weights that do not fit the model are an error), and drop metrics lines
        written after it (a run killed between its metrics line and its checkpoint repeats that epoch, with the
        same numbers)."""
        found = checkpoints(self.ckpt_dir)
        ckpt = None
        for i, candidate in enumerate(found):
            try:
                state = load_checkpoint(candidate, self.model, self.optimizer)
            except CorruptRunFile as err:  # failed its sha256, truncated or damaged
                if i + 1 == len(found):
                    raise RunDirError(
                        f"no readable checkpoint in {self.ckpt_dir}; {candidate.name}: {err}; the run cannot go on: "
                        "evaluate or sample its best weights, or train it anew (--overwrite moves it aside)"
                    ) from None
                note = f"checkpoint {candidate} is unreadable ({err}); resuming from {found[i + 1].name}"
                print(note, file=sys.stderr)
                continue
            if "objective" in state:  # a stateful objective's state (AIWAE's adapted step sizes)
                self.objective.load_state_dict(state.pop("objective"))
            self.state, ckpt = TrainState(**state), candidate
            break
        if self.metrics_path.is_file() and self.rank == 0:
            kept = [row for row in read_jsonl(self.metrics_path) if row["epoch"] <= self.state.epoch]
            self.metrics_path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        return ckpt is not None

    # --- one epoch --------------------------------------------------------------------------------------
    def _weights(self, epoch: int) -> tuple[float, float]:
        o = self.cfg.objective
        return o.beta * linear_ramp(epoch, o.warmup_epochs), linear_ramp(epoch, o.entropy_annealing_epochs)

    def _step(self, x: Tensor, beta: float, entropy_weight: float) -> tuple[Tensor, Tensor]:
        """One optimiser step on the batch `x`; returns (the loss, averaged over ranks; whether the step was taken),
        scalars on the device, read back by no one here (`vaelab.train.steps.checked_step`).

        A non-finite loss or gradient skips the step (on every rank: the check is all-reduced). A non-finite loss
        still goes through `backward` (its gradients are then non-finite too), so that under DDP every rank takes
        part in the gradient all-reduce."""
        loss = -self.module(x, beta, entropy_weight).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return checked_step(self.optimizer, loss, list(self.model.parameters()), self.cfg.train.grad_clip, self.world)

    def _set_lr(self, epoch: int) -> float:
        lr = self.cfg.train.lr * self._lr_schedule(epoch, self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def seed_rank(self, *when: int | str) -> None:
        """Under DDP: reseed the global RNG from (seed, "rank", rank, *when), rank r's own stream (nothing in one
        process, whose stream runs on and is checkpointed)."""
        if self.world > 1:
            torch.manual_seed(derive_seed(self.cfg.seed, "rank", self.rank, *when))

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.seed_rank(epoch)
        lr = self._set_lr(epoch)
        per_step = getattr(self._lr_schedule, "per_step", False)
        beta, entropy_weight = self._weights(epoch)
        self.objective.set_epoch(epoch)  # an objective's own per-epoch schedule (CP-VAE's temperature)
        data = self.placed("train", self.train_data(epoch))
        order = torch.randperm(data.shape[0], generator=epoch_generator(cfg.seed, epoch))
        order = distributed.shard(order, self.rank, self.world).to(data.index_device)  # ceil(N / world) on every rank
        bs = cfg.data.batch_size
        batches = range(0, order.numel(), bs)
        self.model.train()
        tally = StepTally(self.device, self.state.nonfinite_streak)
        start = time.perf_counter()
        bar = progress.progress(
            batches,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            unit="step",
            enabled=cfg.train.progress and self.rank == 0,
        )
        for i, b in enumerate(bar):
            x = data.batch(order[b : b + bs])
            if per_step:
                lr = self._set_lr(epoch)
            tally.add(*self._step(x, beta, entropy_weight))
            self.state.step += 1
            if (i + 1) % self.readback_every == 0 and i + 1 < len(batches):
                self._read_back(tally, epoch, bar)
        sums = self._read_back(tally, epoch, bar)
        elapsed = time.perf_counter() - start
        self.state.nonfinite_streak = sums.streak  # consecutive skipped steps, carried into the next epoch
        if sums.skipped and self.rank == 0:
            warnings.warn(
                f"epoch {epoch + 1}: skipped {sums.skipped} step(s) with a non-finite loss or gradient", stacklevel=2
            )
        self.state.skipped_steps += sums.skipped
        return {
            "lr": lr,
            "beta": beta,
            "entropy_weight": entropy_weight,
            "train_loss": sums.loss / max(sums.taken, 1),
            "skipped_steps": sums.skipped,
            "epoch_time_s": elapsed,
            "steps_per_s": len(batches) / max(elapsed, 1e-9),
            **self.objective.epoch_metrics(),
        }

    def _read_back(self, tally: StepTally, epoch: int, bar) -> Tally:
        """Read the epoch's sums (one host sync), show the mean loss so far, and stop the run (`TrainingDiverged`)
        if more than `train.max_nonfinite_steps` consecutive steps were skipped (counted across epochs)."""
        sums = tally.read()
        limit = self.cfg.train.max_nonfinite_steps
        if sums.longest > limit:
            raise self._diverged(epoch, f"{limit + 1} consecutive steps had a NaN/Inf loss or gradient")
        if sums.taken:
            bar.set_postfix(loss=f"{sums.loss / sums.taken:.2f}")
        return sums

    def _diverged(self, epoch: int, what: str) -> TrainingDiverged:
        ckpt = latest_checkpoint(self.ckpt_dir)
        kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint had been written yet"
        return TrainingDiverged(
            f"training stopped in epoch {epoch + 1}: {what}; {kept}. "
            "Lower train.lr, set train.grad_clip, or check the data."
        )

    def _check_finite(self, epoch: int, valid: float | None = None) -> None:
        """Raise `TrainingDiverged` if a weight or the validation loss is NaN/Inf (nothing after could recover)."""
        if not finite_weights(self.model):
            raise self._diverged(epoch, "the weights became NaN/Inf")
        if valid is not None and not math.isfinite(valid):
            raise self._diverged(epoch, f"the validation loss is {valid}")

    @functools.cached_property
    def valid_labels(self) -> tuple[Tensor, int] | None:
        """The labels `[N]` of the validation split and the number of classes, when the dataset has labels
        (`dataset.labels`); read once and kept. The classes are counted over the training and validation labels, not
        only those of a small `data.valid_subset`, which may miss the largest one."""
        labels = getattr(self.dataset, "labels", None)
        y = labels("valid") if callable(labels) else None
        if y is None or not y.numel():
            return None
        train = labels("train")
        classes = max(int(y.max()), int(train.max()) if train is not None and train.numel() else -1) + 1
        subset = self.cfg.data.valid_subset
        return (y[:subset] if subset else y, classes)

    def validation_loss(self) -> float:
        """Mean negative bound (beta = lambda = 1) on the validation split (`validate`)."""
        return self.validate()["valid_loss"]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """`valid_loss`, the mean negative bound (beta = lambda = 1) on the validation split, summed on the device
        (float64) and read back once, and the columns of the `vaelab.train.diagnostics` that apply to the model (a
        CP-VAE's category use), from the same batches. Under DDP each rank bounds its `distributed.block` of the
        split and the sums are all-reduced, so every rank returns the same values."""
        self.model.eval()
        data, bs = self.placed("valid", self.valid_data()), self.cfg.data.eval_batch_size
        dtype = tally_dtype(self.device)
        total = torch.zeros((), dtype=dtype, device=self.device)
        labelled = self.valid_labels
        diagnostics = validation_diagnostics(self.model, labelled[1] if labelled else None, self.device, dtype)
        placed_labels = self.placed("valid labels", labelled[0]) if diagnostics and labelled else None
        lo, hi = distributed.block(data.shape[0], self.rank, self.world)
        for b in range(lo, hi, bs):
            x = data.rows(b, min(b + bs, hi))
            total += self.objective(self.model, x).sum().to(total.dtype)
            y = placed_labels.rows(b, min(b + bs, hi)) if placed_labels is not None else None
            for d in diagnostics:
                d.add(self.model, x, y)
        result = {"valid_loss": -float(distributed.all_sum(total)) / data.shape[0]}
        for d in diagnostics:
            result.update(d.summary(distributed.all_sum))
        return result

    # --- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        cfg, st = self.cfg, self.state
        if cfg.train.tensorboard and self.rank == 0:
            self._tb = _tensorboard(self.run_dir)
        epochs = progress.progress(
            range(st.epoch, cfg.train.epochs),
            desc="training",
            unit="epoch",
            initial=st.epoch,
            total=cfg.train.epochs,
            enabled=cfg.train.progress and self.rank == 0,
            leave=True,
        )
        burn_in_row = burn_in(self) if st.epoch == 0 else {}  # SIWAE app. D.1, if the objective asks for it
        for epoch in epochs:
            steps_before = st.step
            row = {"epoch": epoch + 1, **burn_in_row, **self.train_epoch(epoch)}
            stop, burn_in_row = False, {}
            good = st.step - steps_before > row["skipped_steps"]  # else the weights are those of the last epoch
            validate = (epoch + 1) % cfg.train.validate_every == 0 or epoch + 1 == cfg.train.epochs
            checked = self.validate() if good and validate else {}
            valid = checked.get("valid_loss")
            self._check_finite(epoch, valid)
            if valid is not None:
                row.update(checked)
                if valid < st.best_valid_loss:
                    st.best_valid_loss, st.best_epoch, st.epochs_without_improvement = valid, epoch + 1, 0
                    if self.rank == 0:
                        save_weights(self.model, self.run_dir / "best.safetensors")
                elif row["beta"] >= cfg.objective.beta and row["entropy_weight"] >= 1.0:  # not during warm-up
                    st.epochs_without_improvement += cfg.train.validate_every
                patience = cfg.train.early_stopping
                if patience is not None and st.epochs_without_improvement >= patience:
                    stop, st.stop_reason = True, f"early stopping: no improvement for {patience} epochs"
            row["best_valid_loss"], row["step"] = st.best_valid_loss, st.step
            st.epoch = epoch + 1
            if stop or st.epoch == cfg.train.epochs:
                st.finished = True
                st.stop_reason = st.stop_reason or f"completed {st.epoch} epochs"
            shown = {"train": f"{row['train_loss']:.2f}"}
            if valid is not None:  # an epoch without validation shows none (not a nan)
                shown["valid"] = f"{valid:.2f}"
            epochs.set_postfix(shown)
            if self.rank == 0:
                self._log(row)
                progress.write(_epoch_line(row, cfg.train.epochs))
                if good and (st.finished or st.epoch % cfg.train.checkpoint_every == 0):  # never an epoch of no step
                    state = asdict(st)
                    if objective_state := self.objective.state_dict():  # {}: a stateless objective
                        state["objective"] = objective_state
                    save_checkpoint(self.ckpt_dir, st.epoch, self.model, self.optimizer, state)
                    self.on_checkpoint()
            if stop:
                break
        epochs.close()
        if self._tb is not None:
            self._tb.close()
        distributed.barrier()  # rank 0's last checkpoint and best weights are complete before any rank reads them
        return st

    def _log(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, row["epoch"])


def fit_with_provenance(trainer: Trainer) -> TrainState:
    """`trainer.fit()`, recording this session (machine, commit, epochs, steps) in the run's provenance file."""
    from vaelab import provenance

    run_dir = trainer.run_dir
    session, first_epoch = provenance.start_session(run_dir, trainer.device), trainer.state.epoch

    def record(finished: bool = False) -> None:
        st = trainer.state
        provenance.record_session(
            run_dir, session, finished, epochs=[first_epoch, st.epoch], steps=st.step,
            finished_training=st.finished, stop_reason=st.stop_reason, world_size=trainer.world,
        )  # fmt: skip

    trainer.on_checkpoint = record  # after each checkpoint: a killed session's record says how far it got
    try:
        return trainer.fit()
    finally:
        if trainer.rank == 0:
            record(finished=True)
            try:  # a picture that cannot be drawn must not hide how the session ended
                write_training_figure(run_dir)
            except Exception as err:  # noqa: BLE001
                print(f"could not draw {run_dir / TRAINING_FIGURE}: {err}", file=sys.stderr)


#: The picture of a run's training (`vaelab.viz.training`), written when a training session ends.
TRAINING_FIGURE = "training.png"


def write_training_figure(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Draw `training.png` (`vaelab.viz.training`) of the run in `run_dir` from its `metrics.jsonl` (every epoch,
    over all its sessions) into `out` (default: the run directory), titled with why training stopped
    (`provenance.json`); None (nothing written) when no epoch has been recorded yet."""
    from vaelab import provenance
    from vaelab.viz.training import epoch_rows, save_training_figure, stop_note

    run_dir = Path(run_dir)
    rows = epoch_rows(read_jsonl(run_dir / "metrics.jsonl"))
    if not rows:
        return None
    note = stop_note(provenance.read(run_dir), rows[-1]["epoch"])
    title = f"{run_dir.name}: " + (note if note.startswith("completed") else f"{len(rows)} epochs; {note}".rstrip("; "))
    return save_training_figure(rows, Path(out or run_dir) / TRAINING_FIGURE, title)


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of `path` (a line cut short by a kill is dropped; no file: none)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _epoch_line(row: dict, epochs: int) -> str:
    valid = f"  valid {row['valid_loss']:.2f}" if "valid_loss" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}  train {row['train_loss']:.2f}{valid}  beta {row['beta']:.2f}"
        f"  lr {row['lr']:.2g}  {row['steps_per_s']:.0f} steps/s"
    )


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from vaelab.errors import ConfigError

        raise ConfigError(
            "train.tensorboard needs the tensorboard package: pip install 'vaelab[tensorboard]'"
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"))
