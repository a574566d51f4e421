"""Training: the loop, learning-rate schedules, atomic checkpoints and resume."""

from vaelab.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vaelab.train.lr_schedules import lr_factor, schedule_epochs
from vaelab.train.trainer import Trainer, TrainState

__all__ = [
    "TrainState",
    "Trainer",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_factor",
    "save_checkpoint",
    "schedule_epochs",
]
