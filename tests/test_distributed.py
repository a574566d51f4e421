"""Training on torch.distributed (issue 11): 2 ranks under torchrun on the CPU (gloo), each launch with a timeout so
that a hang fails the test instead of blocking CI; the shard semantics (`vaelab.distributed.shard`) in-process.

Two launches of tiny runs (`helpers.TINY`): `vaelab train` under torchrun on 601 examples (uneven over 2 ranks),
and `ddp_worker.py` (a run resumed under DDP against an uninterrupted one; AIWAE with a VampPrior and SIWAE with
burn-in, whose ranks must end with the same weights and step sizes).
"""

from __future__ import annotations

import json
import os
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


def test_torchrun_train_uneven_data_and_rank0_alone_writes(tmp_path):
    """`torchrun -m vaelab train` on 601 examples (301 and 300 per rank before padding) finishes; the default run
    directory is one (rank 0's timestamp), written once: one config, one metrics line per epoch with the same
    number of steps on each rank (2 epochs x ceil(301 / 100)), one provenance session of world size 2. Training
    into it again is refused on every rank without a hang."""
    out = torchrun(
        "-m", "vaelab", "train", *TINY, "--set", "data.subset=601", "--set", "train.epochs=2", cwd=tmp_path
    )  # fmt: skip
    (run_dir,) = (tmp_path / "runs").iterdir()
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
