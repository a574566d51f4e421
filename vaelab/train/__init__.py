"""Training: the loop (`trainer`), learning-rate schedules (`lr_schedules`), optimisers (`optimizers`), atomic
checkpoints and resume (`checkpoint`), burn-in and weight transfer. Import from the modules themselves (the package
imports nothing, so that `vaelab.config.registry` can take the schedules without loading the trainer)."""
