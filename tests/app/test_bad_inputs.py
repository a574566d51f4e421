"""Every bad input is one clear line: config values out of range, bad command-line numbers, absent devices, damaged
weights, a full disk, NaN/Inf in pictures; plus the thread setting. Each refusal exits with status 2, its stderr
ends in exactly one error line (progress lines may come before it), and no run directory loses a good checkpoint.
The CLI runs in-process on a tiny slice of the bundled MNIST (helpers.TINY; the helpers of test_run_safety)."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest
import torch
from helpers import TINY
from test_run_safety import cli, snapshot

from vaelab import recording
from vaelab.config import load_config
from vaelab.train import checkpoint
from vaelab.train.checkpoint import atomic_write_text, save_weights

SETS = [value for flag, value in zip(TINY, TINY[1:], strict=False) if flag == "--set"]  # TINY as config overrides


def one_error_line(code: int, err: list[str], command: str, *messages: str) -> bool:
    """Exit status 2; of stderr's lines exactly one is an error, `vaelab COMMAND: error: ...` naming `messages`,
    and it is the last (so the message is one line; progress output may precede it); no traceback."""
    errors = [line for line in err if line.startswith("vaelab ") and ": error: " in line]
    last = err[-1] if err else ""
    return (
        code == 2
        and errors == [last]
        and last.startswith(f"vaelab {command}: error: ")
        and all(m in last for m in messages)
        and not any("Traceback" in line for line in err)
    )


def refused_and_kept(capsys, good: Path, argv: list[str], command: str, *messages: str) -> list[str]:
    """Run `argv` ({run}: the good run, {new}: a new run directory) and check it is refused in one line, the good
    run is byte for byte as it was and no new run directory was left behind; returns stderr's lines."""
    new = good.parent / "new"
    before = snapshot(good)
    code, err = cli(capsys, *[str(good) if a == "{run}" else str(new) if a == "{new}" else a for a in argv])
    assert one_error_line(code, err, command, *messages), err
    assert snapshot(good) == before
    assert not new.exists()
    return err


# --- 1. config values: ranges and choices in the schema ----------------------------------------------------
@pytest.mark.parametrize(
    "setting, message",
    [
        ("model.latent_dim=-6", "model.latent_dim must be >= 1, got -6"),
        ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
        ("train.lr=-1", "train.lr must be >= 0, got -1"),
        ("train.lr=.nan", "train.lr must be >= 0, got nan"),
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("data.eval_batch_size=-1", "data.eval_batch_size must be >= 1"),
        ("data.subset=0", "data.subset must be >= 1"),
        ("eval.is_samples=0", "eval.is_samples must be >= 1"),
        ("eval.subset=0", "eval.subset must be >= 1"),
        ("eval.batch_size=0", "eval.batch_size must be >= 1"),
        ("train.adam_betas=[0.9, 1.5]", "train.adam_betas (each entry) must be >= 0 and < 1, got 1.5"),
        ("objective.beta=-1", "objective.beta must be >= 0"),
        ("train.grad_clip=0", "train.grad_clip must be > 0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1"),
        ("gaps.samples=0", "gaps.samples must be >= 1"),
        ("threads=0", "threads must be >= 1"),
        ("train.optimizer=adamw", "train.optimizer must be one of adam, adam_normgrad"),
        ("train.epochs=1.5", "train.epochs must be an int, got 1.5"),
        ("train.lr_schedule={type: step, every: 1, gamma: big}", "option 'gamma' of learning-rate schedule 'step'"),
        (
            "train.lr_schedule={type: step, every: 1.5}",
            "option 'every' of learning-rate schedule 'step' must be a whole",
        ),
        ("objective.options={samples: 0}", "option 'samples' of objective 'elbo' must be at least 1, got 0"),
        ("train.lr_schedule={type: step, every: 1, gamma: 0}", "option 'gamma' of learning-rate schedule 'step' must"),
        ("model.likelihood={type: gaussian, sigma: -1}", "option 'sigma' of likelihood 'gaussian' must be > 0"),
    ],
)
def test_a_config_value_out_of_range_is_one_line(good, capsys, setting, message):
    refused_and_kept(capsys, good, ["train", *TINY, "--set", setting, "--run-dir", "{new}"], "train", message)


def test_resume_checks_the_ranges_too(good, capsys):
    refused_and_kept(capsys, good, ["train", "--resume", "{run}", "--set", "train.epochs=0"], "train", "train.epochs")


def test_numbers_yaml_reads_as_strings_are_read_as_numbers(tmp_path, capsys):
    """YAML 1.1 reads 1e6 as a string: a float option of a component (here the step schedule's gamma) and an int
    config key take it as the number it spells."""
    sets = ["--set", "train.lr_schedule={type: step, every: 1, gamma: 1e6}", "--set", "data.subset=6e2"]
    code, err = cli(capsys, "train", *TINY, *sets, "--run-dir", tmp_path / "r")
    assert code == 0, err
    assert "subset: 600" in (tmp_path / "r" / "config.yaml").read_text()


# --- 2. command-line numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, command, message",
    [
        (["evaluate", "{run}", "--samples", "-5"], "evaluate", "argument --samples: must be a positive integer"),
        (["evaluate", "{run}", "--samples", "0"], "evaluate", "--samples"),
        (["evaluate", "{run}", "--subset", "0"], "evaluate", "argument --subset: must be a positive integer, got '0'"),
        (["evaluate", "{run}", "--subset", "-3"], "evaluate", "--subset"),
        (["evaluate", "{run}", "--batch-size", "0"], "evaluate", "--batch-size"),
        (["evaluate", "{run}", "--threads", "0"], "evaluate", "argument --threads"),
        (["sample", "{run}", "--n", "0"], "sample", "argument --n: must be a positive integer, got '0'"),
        (["sample", "{run}", "--n", "-3"], "sample", "argument --n"),
        (["sample", "{run}", "--n", "many"], "sample", "got 'many'"),
        (["sample", "{run}", "--cluster", "-1"], "sample", "argument --cluster: must be an integer >= 0"),
        (["gaps", "{run}", "--subset", "0"], "gaps", "argument --subset"),
        (["gaps", "{run}", "--lr", "-1"], "gaps", "argument --lr: must be a number > 0"),
        (["gaps", "{run}", "--ais-temperatures", "-1"], "gaps", "argument --ais-temperatures"),
        (["train", *TINY, "--threads", "-2", "--run-dir", "{new}"], "train", "argument --threads"),
        (["sweep", "cfg.yaml", "--threads", "0"], "sweep", "argument --threads"),
        (["ledger", "verify", "{run}", "--subset", "0"], "ledger", "argument --subset"),
        (["evaluate"], "evaluate", "the following arguments are required: RUN_DIR"),
    ],
)
def test_a_bad_command_line_number_is_one_line(good, capsys, argv, command, message):
    refused_and_kept(capsys, good, argv, command, message)


# --- 3. devices -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, command",
    [
        (["evaluate", "{run}", "--device", "cuda:7"], "evaluate"),
        (["evaluate", "{run}", "--device", "gpu"], "evaluate"),
        (["sample", "{run}", "--device", "cuda:7"], "sample"),
        (["train", *TINY, "--device", "gpu", "--run-dir", "{new}"], "train"),
        (["train", *TINY, "--set", "device=tpu", "--run-dir", "{new}"], "train"),
    ],
)
def test_an_absent_device_is_one_line_naming_the_devices(good, capsys, argv, command):
    name = argv[argv.index("--device") + 1] if "--device" in argv else "tpu"
    refused_and_kept(capsys, good, argv, command, f"device {name!r} is not available", "this machine has: cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(good, capsys):
    refused_and_kept(capsys, good, ["evaluate", "{run}", "--device", "cuda"], "evaluate", "device 'cuda'", "cpu")


# --- 4. damaged files: sha256 beside every weights and state file -------------------------------------------
def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":  # one byte of the last tensor's data
        data[-10] ^= 0xFF
    elif how == "truncate":
        data = data[:100]
    elif how == "header":  # the JSON header's first bytes
        data[8:18] = b"##########"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "target, how, digest, argv, messages",
    [
        ("best.safetensors", "flip", True, ["evaluate", "{run}"], ["best.safetensors is corrupt", "--checkpoint last"]),
        ("best.safetensors", "truncate", True, ["evaluate", "{run}"], ["best.safetensors is corrupt", "sha256"]),
        ("best.safetensors", "header", True, ["sample", "{run}"], ["best.safetensors is corrupt", "--checkpoint last"]),
        ("best.safetensors", "truncate", False, ["evaluate", "{run}"], ["best.safetensors is corrupt (truncated"]),
        ("best.safetensors", "header", False, ["evaluate", "{run}"], ["best.safetensors is corrupt (truncated"]),
        (
            "checkpoints/epoch-000001/model.safetensors",
            "flip",
            True,
            ["evaluate", "{run}", "--checkpoint", "last"],
            ["epoch-000001/model.safetensors is corrupt", "--checkpoint best"],
        ),
        (
            "checkpoints/epoch-000001/state.pt",
            "flip",
            True,
            ["train", "--resume", "{run}", "--set", "train.epochs=2"],
            ["no readable checkpoint", "state.pt is corrupt"],
        ),
        (
            "checkpoints/epoch-000001/state.pt",
            "truncate",
            False,
            ["train", "--resume", "{run}", "--set", "train.epochs=2"],
            ["no readable checkpoint", "state.pt is corrupt (truncated"],
        ),
    ],
)
def test_a_damaged_weights_or_state_file_is_one_line(good, capsys, target, how, digest, argv, messages):
    damage(good / target, how)
    if not digest:  # a file written before vaelab recorded digests
        (good / f"{target}.sha256").unlink()
    argv = [*argv, "--samples", "2", "--subset", "10"] if argv[0] == "evaluate" else argv
    refused_and_kept(capsys, good, [*argv, "--no-progress"], argv[0], *messages)


def test_every_weights_and_state_file_has_its_sha256(good):
    import hashlib

    files = [good / "best.safetensors", *(f for f in (good / "checkpoints").glob("epoch-*/*") if f.suffix != ".sha256")]
    assert {f.name for f in files} == {"best.safetensors", "model.safetensors", "state.pt"}
    for f in files:
        digest, name = (good / f"{f.relative_to(good)}.sha256").read_text().split()
        assert digest == hashlib.sha256(f.read_bytes()).hexdigest() and name == f.name  # sha256sum -c reads it


def test_files_written_before_checksums_load_unchecked(good, capsys):
    for side in good.rglob("*.sha256"):
        side.unlink()
    code, err = cli(capsys, "evaluate", good, "--samples", "2", "--subset", "10", "--no-progress")
    assert code == 0 and not any(": error: " in line for line in err), err


def test_a_checkpoint_that_does_not_fit_the_edited_config_is_one_line(good, capsys):
    config = good / "config.yaml"
    config.write_text(config.read_text().replace("latent_dim: 4", "latent_dim: 6"))
    message = "do not fit the model its config.yaml describes"
    refused_and_kept(capsys, good, ["evaluate", "{run}", "--samples", "2"], "evaluate", message, "[8, 32] there")
    refused_and_kept(capsys, good, ["train", "--resume", "{run}", "--set", "train.epochs=2"], "train", message)


def test_a_rewrite_of_best_lists_both_digests_until_the_new_file_is_in_place(tmp_path, monkeypatch):
    """Killed between replacing best.safetensors and its digest file, the pair still verifies."""
    path = tmp_path / "best.safetensors"
    checkpoint.write_checked(path, b"old weights")
    replace = checkpoint._replace
    calls = []

    def killed_after_the_file(target, data):
        calls.append(target.name)
        if len(calls) == 3:  # the final rewrite of the digest file
            raise KeyboardInterrupt
        replace(target, data)

    monkeypatch.setattr(checkpoint, "_replace", killed_after_the_file)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_checked(path, b"new weights")
    assert calls == ["best.safetensors.sha256", "best.safetensors", "best.safetensors.sha256"]
    assert checkpoint.read_checked(path) == b"new weights"
    assert len(checkpoint.digest_path(path).read_text().splitlines()) == 2


# --- 5. NaN and Inf in pictures ---------------------------------------------------------------------------
def made_run(path: Path, fill) -> Path:
    """A run with a 2-D latent (so `vaelab sample` also draws q and q_IW over p(z|x)) whose weights `fill` changed."""
    cfg = load_config(None, [*SETS, "model.latent_dim=2"])
    run = recording.build_run(cfg, path)
    with torch.no_grad():
        fill(run.model)
    path.mkdir(parents=True)
    atomic_write_text(path / "config.yaml", cfg.to_yaml())
    save_weights(run.model, path / "best.safetensors")
    return path


def last_bias_huge(model) -> None:
    """Decoder logits of 3e38: finite weights, but log p(x | z) = -inf for every image with a 0 pixel."""
    [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1].bias.fill_(3e38)


def test_data_with_minus_inf_log_likelihoods_draw_every_picture(tmp_path, capsys):
    run = made_run(tmp_path / "inf", last_bias_huge)
    code, err = cli(capsys, "sample", run, "--n", "4", "--no-progress")
    assert code == 0, err
    assert {"samples.png", "reconstructions.png", "posterior-test.png"} <= {p.name for p in run.iterdir()}
    code, err = cli(capsys, "evaluate", run, "--samples", "3", "--subset", "10", "--no-progress")
    assert code == 0 and (run / "loglik-test.png").is_file(), err


def test_a_nan_run_is_one_line_for_sample_and_evaluates(tmp_path, capsys):
    run = made_run(tmp_path / "nan", lambda model: [p.fill_(math.nan) for p in model.parameters()])
    before = snapshot(run)
    code, err = cli(capsys, "sample", run, "--n", "4", "--no-progress")
    assert one_error_line(code, err, "sample", "NaN or Inf", "nothing to draw"), err
    assert snapshot(run) == before
    code, err = cli(capsys, "evaluate", run, "--samples", "3", "--subset", "10", "--no-progress")
    assert code == 0 and (run / "loglik-test.png").is_file(), err


def test_curves_leave_out_nan_and_inf(tmp_path):
    from vaelab.viz.curves import save_curves

    series = {"nan": ([1, 2, 3], [math.nan] * 3), "inf": ([1, 2, 3], [1.0, math.inf, -math.inf])}
    for logy in (False, True):
        assert save_curves(series, tmp_path / f"c{logy}.png", "epoch", "loss", logy=logy, hlines={"ref": math.inf})


def test_q_iw_draws_without_a_finite_weight_are_nan():
    from vaelab.evaluation.stratified import implicit_posterior_sample

    run = recording.build_run(load_config(None, [*SETS, "model.latent_dim=2"]), Path("unused"))
    with torch.no_grad():
        last_bias_huge(run.model)
    z = implicit_posterior_sample(run.model, run.dataset.split("test")[:3], 5, 10)
    assert z.shape == (5, 3, 2) and bool(z.isnan().all())


# --- 6. a full disk -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fails", ["best.safetensors", "epoch-000002"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(good, capsys, monkeypatch, fails):
    kept_files = ("checkpoints/", "best.") if fails == "best.safetensors" else ("checkpoints/",)  # best is saved first
    kept = {k: v for k, v in snapshot(good).items() if k.startswith(kept_files)}
    write = checkpoint._write_bytes

    def full_disk(path: Path, data: bytes) -> None:
        if fails in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(checkpoint, "_write_bytes", full_disk)
    code, err = cli(capsys, "train", "--resume", good, "--set", "train.epochs=2", "--no-progress", "--no-eval")
    assert one_error_line(code, err, "train", "No space left on device", "--resume"), err
    assert {k: v for k, v in snapshot(good).items() if k.startswith(kept_files)} == kept
    assert checkpoint.read_weights(good / "best.safetensors")  # the old best, or the new one, complete
    assert not [p for p in good.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpoint, "_write_bytes", write)  # space freed: the run goes on
    code, err = cli(capsys, "train", "--resume", good, "--set", "train.epochs=2", "--no-progress", "--no-eval")
    assert code == 0 and (good / "checkpoints" / "latest").read_text().strip() == "epoch-000002", err


# --- 7. threads ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cli_threads, config_threads, omp, expected",
    [(None, None, None, 1), (None, None, "3", 3), (None, 2, None, 2), (3, 2, None, 3), (2, None, "1", 2)],
)
def test_threads_reach_torch(good, capsys, monkeypatch, cli_threads, config_threads, omp, expected):
    """--threads, else the config's `threads`, else OMP_NUM_THREADS, else 1."""
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    config = good / "config.yaml"
    config.write_text(config.read_text().replace("threads: null", f"threads: {config_threads or 'null'}"))
    torch.set_num_threads(4)
    extra = ["--threads", str(cli_threads)] if cli_threads else []
    code, err = cli(capsys, "evaluate", good, "--samples", "2", "--subset", "10", "--no-progress", *extra)
    assert code == 0, err
    assert torch.get_num_threads() == expected


def test_a_busy_machine_is_one_warning_line(good, capsys, monkeypatch):
    monkeypatch.setattr("vaelab.threads.load_average", lambda: 7.5)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    code, err = cli(capsys, "evaluate", good, "--samples", "2", "--subset", "10", "--no-progress")
    assert code == 0
    assert [line for line in err if "load average" in line] == [err[0]]
    assert "load average 7.5 on 4 cores" in err[0] and "--threads" in err[0]


def test_resume_may_change_the_threads(good, capsys):
    code, err = cli(capsys, "train", "--resume", good, "--set", "threads=1", "--no-progress", "--no-eval")
    assert code == 0, err
