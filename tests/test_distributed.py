"""Training on torch.distributed (issue 11): 2 ranks under torchrun on the CPU (gloo), each launch with a timeout so
that a hang fails the test instead of blocking CI; the shard semantics (`vaelab.distributed.shard`) in-process.

Eight launches of tiny runs (`helpers.TINY`): `vaelab train` under torchrun on 601 examples (uneven over 2 ranks),
again into the same directory (refused), `vaelab evaluate` of that run (sharded IS, AIS and BDMC against one
process),
`ddp_worker.py` (a run resumed under DDP against an uninterrupted one; AIWAE with a VampPrior and SIWAE with burn-in,
whose ranks must end with the same weights and step sizes), and `vaelab sweep` of 2 grid points over 2 ranks, then
of 3 with one that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from vaelab import distributed
from vaelab.app import runs
from vaelab.app.runs import resume_config
from vaelab.recording import load_run

TESTS = Path(__file__).resolve().parent
TIMEOUT = 240  # seconds per launch: a hang fails here (the launches take 10-20 s on an idle 2-core machine)


def torchrun(*args: str, cwd: Path, fails: bool = False) -> str:
    """Run `torchrun --standalone --nproc_per_node 2 ARGS` in `cwd` and return its output; fail on a non-zero exit
    (with `fails`, on a zero one) or, killing the whole process group, after `TIMEOUT` seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} hung (killed after {TIMEOUT} s):\n{out[-3000:]}")
    assert (proc.returncode != 0) == fails, f"torchrun {' '.join(args)} exited with {proc.returncode}:\n{out[-3000:]}"
    return out


def rows(run_dir: Path) -> list[dict]:
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in out:
        row.pop("epoch_time_s"), row.pop("steps_per_s")
    return out


@pytest.mark.parametrize("n", [1, 5, 600, 601, 603])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_is_distributed_samplers(n, world):
    """Every rank gets ceil(n / world) indices, those of `DistributedSampler` (drop_last False) over `order`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert distributed.shard(order, rank, world).tolist() == [order[i].item() for i in sampler]
    blocks = [distributed.block(n, r, world) for r in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n  # contiguous, covering 0..n once:
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, str]:
    """`torchrun -m vaelab train` on 601 examples (301 and 300 per rank before padding), 2 epochs, into the default
    run directory under a fresh working directory: (the run directory, torchrun's output)."""
    cwd = tmp_path_factory.mktemp("ddp")
    out = torchrun("-m", "vaelab", "train", *TINY, "--set", "data.subset=601", "--set", "train.epochs=2", cwd=cwd)
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir, out


def test_torchrun_train_uneven_data_and_rank0_alone_writes(ddp_run, tmp_path):
    """Training on uneven data finishes; the default run directory is one (rank 0's timestamp), written once: one
    config, one metrics line per epoch with the same number of steps on each rank (2 epochs x ceil(301 / 100)), one
    provenance session of world size 2. Training into it again is refused on every rank without a hang."""
    run_dir, out = ddp_run
    assert out.count("run directory:") == 1 and out.count("training done") == 1, out
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.safetensors", "best.safetensors.sha256", "checkpoints", "config.yaml", "metrics.jsonl",
        "provenance.json",
    ]  # fmt: skip
    assert [(r["epoch"], r["step"]) for r in rows(run_dir)] == [(1, 4), (2, 8)]
    (session,) = json.loads((run_dir / "provenance.json").read_text())["sessions"]
    assert session["world_size"] == 2 and session["finished"] and session["steps"] == 8
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []

    out = torchrun("-m", "vaelab", "train", *TINY, "--run-dir", str(run_dir), cwd=tmp_path, fails=True)
    assert out.count("already holds a run") == 1, out  # refused on every rank, said once (by rank 0), no hang


def test_sharded_evaluation_equals_one_process(ddp_run, tmp_path):
    """`torchrun -m vaelab evaluate RUN` shares the IS batches out over 2 ranks (3 batches of 100, 100 and 50
    points); its per-point values equal one process's with `batch_seeds`, and so its summary does."""
    copies = [tmp_path / "sharded", tmp_path / "single"]
    for copy in copies:
        shutil.copytree(ddp_run[0], copy)
    out = torchrun("-m", "vaelab", "evaluate", str(copies[0]), "--samples", "20", "--subset", "250", cwd=tmp_path)
    assert out.count("log p(x) ~") == 1, out
    runs.evaluate(load_run(copies[1]), "test", 20, 250, 100, progress=False, batch_seeds=True)
    sharded, single = (torch.load(c / "eval-test-per-example.pt", weights_only=True) for c in copies)
    assert sharded.keys() == single.keys() and all(torch.equal(sharded[k], single[k]) for k in single)
    summaries = [json.loads((c / "eval-test.json").read_text()) for c in copies]
    for summary in summaries:
        summary.pop("seconds")
    assert summaries[0] == summaries[1] and summaries[0]["n"] == 250


def _same_outputs(copies: list[Path], stem: str) -> dict:
    """The sharded and the one-process run directories hold equal per-point values and summaries (but for timing)."""
    sharded, single = (torch.load(c / f"{stem}-per-example.pt", weights_only=True) for c in copies)
    assert sharded.keys() == single.keys() and all(torch.equal(sharded[k], single[k]) for k in single), stem
    summaries = [json.loads((c / f"{stem}.json").read_text()) for c in copies]
    for summary in summaries:
        summary.pop("seconds")
    assert summaries[0] == summaries[1], stem
    assert not [p for c in copies for p in c.glob("*-partial")]  # removed once the result is written
    return summaries[0]


def test_sharded_ais_and_bdmc_equal_one_process(ddp_run, tmp_path):
    """`torchrun -m vaelab evaluate RUN --ais ...` shares AIS batches out over 2 ranks (3 batches of 100, 100 and
    50 points, 2 replicates each) and `--bdmc` its simulated points (3 batches of 40, 40 and 20): the per-point
    values, and so the summaries, equal one process's, and each is printed once (by rank 0)."""
    from vaelab.mcmc.options import parse_ais_options

    copies = [tmp_path / "sharded", tmp_path / "single"]
    for copy in copies:
        shutil.copytree(ddp_run[0], copy)
    ais = ["cremer", "chains=3", "temps=8", "leapfrog=2", "replicates=2"]
    bdmc = ["cremer", "chains=2", "temps=8", "leapfrog=2", "batch_size=40"]
    evaluate = ["-m", "vaelab", "evaluate", str(copies[0]), "--no-progress"]
    out = torchrun(*evaluate, "--ais", *ais, "--subset", "250", "--batch-size", "100", cwd=tmp_path)
    assert out.count("log p(x) ~") == 1, out
    out = torchrun(*evaluate, "--bdmc", *bdmc, "--subset", "100", cwd=tmp_path)
    assert out.count("BDMC on 100 points") == 1, out
    run = load_run(copies[1])
    runs.evaluate_ais(run, parse_ais_options(ais), "test", 250, 100, progress=False)
    runs.evaluate_bdmc(run, parse_ais_options(bdmc), 100, progress=False)
    assert _same_outputs(copies, "eval-test-ais")["n"] == 250
    assert _same_outputs(copies, "eval-bdmc")["n"] == 100


def test_ddp_resume_matches_and_ranks_agree(tmp_path):
    """Under DDP a run resumed after epoch 1 matches the uninterrupted run number for number (metrics, weights);
    AIWAE's adapted step sizes, a VampPrior's pseudo-inputs and SIWAE's burn-in leave every rank with the same
    state; and the DDP run resumes in one process (another world size: ceil(601 / 100) = 7 steps per epoch, not 4)."""
    torchrun(str(TESTS / "ddp_worker.py"), str(tmp_path), cwd=tmp_path)
    full, part = tmp_path / "full", tmp_path / "part"
    assert rows(part) == rows(full) and [r["step"] for r in rows(full)] == [4, 8]
    last = "checkpoints/epoch-000002/model.safetensors"
    a, b = load_file(full / last), load_file(part / last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(json.loads((part / "provenance.json").read_text())["sessions"]) == 2

    for name in ("aiwae", "burn_in"):
        rank0, rank1 = (torch.load(tmp_path / f"{name}-rank{r}.pt", weights_only=True) for r in (0, 1))
        assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"]), name
    aiwae0, aiwae1 = (torch.load(tmp_path / f"aiwae-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert "prior.raw_inputs" in aiwae0["weights"]
    assert torch.equal(aiwae0["step_sizes"], aiwae1["step_sizes"]) and not torch.all(aiwae0["step_sizes"] == 0.1)
    assert "burn_in_loss" in rows(tmp_path / "burn_in")[0]

    cfg = resume_config(part, ["train.epochs=3"])
    runs.train(cfg, part, resume=True)  # world size 1 now
    assert [r["step"] for r in rows(part)] == [4, 8, 15]


SWEEP = [
    "sweep", str(TESTS.parent / "configs" / "siwae" / "toy_abs.yaml"), "--budget", "quick", "--set", "train.epochs=1",
    "--set", "data.subset=64", "--set", "eval.is_samples=20", "--set", "eval.subset=40", "--no-progress",
]  # fmt: skip


def _evaluations(out: Path) -> dict[str, dict]:
    """Each sweep point's `eval-train.json` without its timing."""
    found = {}
    for path in sorted(out.glob("*/eval-train.json")):
        found[path.parent.name] = json.loads(path.read_text())
        found[path.parent.name].pop("seconds")
    return found


def test_torchrun_sweep_deals_whole_points_to_ranks_and_a_failed_point_leaves_the_others(tmp_path):
    """`torchrun -m vaelab sweep` of 2 points: one per rank, each an independent single-process run (world size 1 in
    its provenance) whose evaluation equals a one-process sweep's; rank 0 alone writes the table of both. Then 3
    points into the same directory, the third's run directory blocked by a stray file: the two finished points are
    reused, the third fails on rank 0 and is reported once, the table keeps the other two, and the exit is non-zero."""
    from vaelab.app.cli import main

    out = tmp_path / "sweep"
    log = torchrun("-m", "vaelab", *SWEEP, "--grid", "posterior.components=1,2", "--out", str(out), cwd=tmp_path)
    assert "[1/2] components=1 (rank 0)" in log and "[2/2] components=2 (rank 1)" in log, log
    assert log.count("| components |") == 1 and log.count("wrote ") == 1, log  # rank 0 alone prints the table
    table = (out / "sweep.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == ["components=1", "components=2"]
    for point in ("components=1", "components=2"):
        (session,) = json.loads((out / point / "provenance.json").read_text())["sessions"]
        assert session["world_size"] == 1, session
    alone = tmp_path / "alone"
    assert main([*SWEEP, "--grid", "posterior.components=1,2", "--out", str(alone)]) == 0
    assert _evaluations(out) == _evaluations(alone)

    stamp = {p: (out / p / "eval-train.json").stat().st_mtime_ns for p in ("components=1", "components=2")}
    (out / "components=4").mkdir()
    (out / "components=4" / "notes.txt").write_text("not a run")
    log = torchrun(
        "-m", "vaelab", *SWEEP, "--grid", "posterior.components=1,2,4", "--out", str(out), cwd=tmp_path, fails=True
    )
    assert "sweep point components=4 failed on rank 0" in log, log
    assert log.count("vaelab sweep: error: 1 of 3 sweep points failed (components=4 on rank 0: ") == 1, log
    assert {p: (out / p / "eval-train.json").stat().st_mtime_ns for p in stamp} == stamp  # reused, not rerun
    table = (out / "sweep.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == ["components=1", "components=2"]


def test_fit_under_torchrun_trains_one_run_like_vaelab_train(tmp_path):
    """`vaelab.fit` on every rank of a 2-rank torchrun (201 examples, batch 20: ceil(101 / 20) = 6 steps per epoch on
    each rank, not 11): one run directory (rank 0's default name) written once, with world size 2 in its provenance;
    the ranks end with the same weights although they started from different ones; a second fit into it is refused
    on every rank; a resume to 3 epochs matches 3 uninterrupted epochs."""
    torchrun(str(TESTS / "fit_worker.py"), str(tmp_path), cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("fit-")
    assert [(r["epoch"], r["step"]) for r in rows(run_dir)] == [(1, 6), (2, 12), (3, 18)]
    sessions = json.loads((run_dir / "provenance.json").read_text())["sessions"]
    assert [s["world_size"] for s in sessions] == [2, 2] and all(s["finished"] for s in sessions)
    ranks = [torch.load(tmp_path / f"fit-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"] == str(Path("runs") / run_dir.name)
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])
    for r in (0, 1):
        assert "is not empty" in (tmp_path / f"refused-rank{r}.txt").read_text()
    assert rows(tmp_path / "full") == rows(run_dir)
    last = "checkpoints/epoch-000003/model.safetensors"
    a, b = load_file(run_dir / last), load_file(tmp_path / "full" / last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
