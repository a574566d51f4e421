"""Training on torch.distributed (issue 11): 2 ranks under torchrun on the CPU (gloo), each launch with a timeout so
that a hang fails the test instead of blocking CI; the shard semantics (`vaelab.distributed.shard`) in-process.

Launches of tiny runs (`helpers.TINY`): `vaelab train` under torchrun on 601 examples (uneven over 2 ranks), again
into the same directory (refused), `vaelab evaluate` of that run (sharded IS, AIS and BDMC against one process),
`vaelab gaps` and `vaelab report --evaluate` of it (against one process; a stopped gap measurement is continued in
one process), `ddp_worker.py` (a run resumed under DDP against an uninterrupted one; AIWAE with a VampPrior and
SIWAE with burn-in, whose ranks must end with the same weights and step sizes), `vaelab sweep` of 2 grid points over
2 ranks, then of 3 with one that fails, and `fit_worker.py` (`vaelab.fit` under torchrun).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import CPVAE, SETTINGS
from helpers import TINY
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from vaelab import distributed
from vaelab.app import runs
from vaelab.app.runs import resume_config
from vaelab.config import load_config
from vaelab.evaluation.clustering import hungarian_accuracy
from vaelab.models.cpvae import category_probabilities
from vaelab.recording import build_run, load_run

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
        "provenance.json", "training.png",
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
        summary.pop("seconds"), summary.pop("seconds_total")
    assert summaries[0] == summaries[1], stem
    assert not [p for c in copies for p in c.glob("*-partial")]  # removed once the result is written
    return summaries[0]


def test_sharded_ais_and_bdmc_equal_one_process(ddp_run, tmp_path):
    """`torchrun -m vaelab evaluate RUN --ais ...` shares AIS batches out over 2 ranks (3 batches of 100, 100 and
    50 points, 2 replicates each) and `--bdmc` its simulated points (3 batches of 40, 40 and 20): the per-point
    values, and so the summaries, equal one process's, and each is printed once (by rank 0). Under a `--stop-after`
    that has passed, both ranks stop before their first batch, and rank 0 alone says so."""
    from vaelab.mcmc.options import parse_ais_options

    copies = [tmp_path / "sharded", tmp_path / "single"]
    for copy in copies:
        shutil.copytree(ddp_run[0], copy)
    ais = ["cremer", "chains=3", "temps=8", "leapfrog=2", "replicates=2"]
    bdmc = ["cremer", "chains=2", "temps=8", "leapfrog=2", "batch_size=40"]
    evaluate = ["-m", "vaelab", "evaluate", str(copies[0]), "--no-progress"]
    late = ["--stop-after", "0.001s"]  # past before the first batch: every rank stops there, none waits for another
    out = torchrun(*evaluate, "--ais", *ais, "--subset", "250", "--batch-size", "100", *late, cwd=tmp_path, fails=True)
    assert out.count("stopped within its time limit: 3 batches left, 0 saved") == 1, out  # said by rank 0 alone
    out = torchrun(*evaluate, "--ais", *ais, "--subset", "250", "--batch-size", "100", cwd=tmp_path)
    assert out.count("log p(x) ~") == 1, out
    out = torchrun(*evaluate, "--bdmc", *bdmc, "--subset", "100", cwd=tmp_path)
    assert out.count("BDMC on 100 points") == 1, out
    run = load_run(copies[1])
    runs.evaluate_ais(run, parse_ais_options(ais), "test", 250, 100, progress=False)
    runs.evaluate_bdmc(run, parse_ais_options(bdmc), 100, progress=False)
    assert _same_outputs(copies, "eval-test-ais")["n"] == 250
    assert _same_outputs(copies, "eval-bdmc")["n"] == 100


#: `vaelab gaps` on 5 test points in 3 batches (2, 2, 1): FFG and FullCov q*, a single-sample IWAE (so that AIS, 3
#: chains x 30 temperatures from q*, is the largest bound and is rerun on fresh chains).
GAPS = [
    "--split", "test", "--subset", "5", "--batch-size", "2", "--families", "ffg,full_covariance", "--max-steps", "40",
    "--lr", "0.02", "--check-every", "5", "--patience", "2", "--samples", "3", "--eval-samples", "1",
    "--ais-chains", "3", "--ais-temperatures", "30", "--ais-leapfrog", "2", "--no-progress",
]  # fmt: skip


def _gap_outputs(run_dir: Path) -> tuple[dict, dict]:
    summary = json.loads((run_dir / "gaps.json").read_text())
    for timing in ("seconds", "seconds_total", "batches_resumed", "batches_untimed"):
        summary.pop(timing)
    assert not (run_dir / "gaps-partial").exists()  # removed once the reports are written
    return summary, torch.load(run_dir / "gaps-per-example.pt", weights_only=True)


def _same_gaps(a: Path, b: Path) -> dict:
    (summary_a, per_a), (summary_b, per_b) = _gap_outputs(a), _gap_outputs(b)
    assert per_a.keys() == per_b.keys() and all(torch.equal(per_a[k], per_b[k]) for k in per_a)
    assert summary_a == summary_b
    return summary_a


def test_sharded_gaps_equal_one_process(ddp_run, tmp_path):
    """`torchrun -m vaelab gaps RUN` shares the 3 batches of points out over 2 ranks (q* fits, IWAE and AIS), picks
    the bound on the all-gathered values and reruns AIS sharded: the per-point values (and the summary) equal one
    process's; rank 0 alone prints the table."""
    from vaelab.app.cli import main

    copies = [tmp_path / "sharded", tmp_path / "single"]
    for copy in copies:
        shutil.copytree(ddp_run[0], copy)
    out = torchrun("-m", "vaelab", "gaps", str(copies[0]), *GAPS, cwd=tmp_path)
    assert out.count("| log p^(x) |") == 1 and out.count("gaps-per-example.pt") == 1, out
    assert main(["gaps", str(copies[1]), *GAPS]) == 0
    summary = _same_gaps(*copies)
    assert summary["n"] == 5 and summary["log_p_hat"]["bound"] == "AIS" and summary["settings"]["seed"] == 0


def test_a_stopped_gap_measurement_continues(ddp_run, tmp_path, monkeypatch, capsys):
    """`vaelab gaps` stopped in its second batch's local optimisation keeps the first batch in gaps-partial/; other
    settings are then refused naming them, and a --stop-after that has passed starts no batch (status 75);
    continued, it stops again in the second batch of the fresh AIS (the three selection batches and one fresh batch
    kept); continued again it computes only the two fresh AIS batches left, and its results equal an uninterrupted
    run's."""
    from vaelab.app.cli import main
    from vaelab.evaluation import gaps

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for copy in (whole, stopped):
        shutil.copytree(ddp_run[0], copy)
    assert main(["gaps", str(whole), *GAPS]) == 0
    calls: dict[str, int] = {}

    def stopping(name: str, at: int | None):
        real = getattr(gaps, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == at:
                raise RuntimeError(f"stopped in {name}")
            return real(*args, **kwargs)

        monkeypatch.setattr(gaps, name, wrapper)

    partial = stopped / "gaps-partial"
    stopping("optimize_local", 3)  # batch 0 fits FFG and FullCov; batch 1's first fit stops
    with pytest.raises(RuntimeError, match="stopped in optimize_local"):
        main(["gaps", str(stopped), *GAPS])
    assert sorted(p.name for p in (partial / "selection").iterdir()) == ["batch-000000.pt.gz", "manifest.json"]
    assert not (stopped / "gaps.json").exists()
    monkeypatch.undo()
    assert main(["gaps", str(stopped), *GAPS, "--seed", "1"]) == 2
    assert "seed: 0 there, 1 now" in capsys.readouterr().err
    assert main(["gaps", str(stopped), *GAPS, "--max-steps", "30"]) == 2
    assert "max_steps: 40 there, 30 now" in capsys.readouterr().err
    assert main(["gaps", str(stopped), *GAPS, "--stop-after", "0.001s"]) == 75  # past: no batch is started
    assert re.search(r"vaelab gaps: stopped within its time limit: 2 batches left \(about \d+ s each\), 1 saved in .*"
                     r"gaps-partial/selection; run the same command again", capsys.readouterr().err)  # fmt: skip

    calls.clear()
    stopping("ais", 4)  # batches 1 and 2 run AIS for the selection, then fresh AIS of batch 0, then batch 1 stops
    with pytest.raises(RuntimeError, match="stopped in ais"):
        main(["gaps", str(stopped), *GAPS])
    assert len(list((partial / "selection").glob("batch-*.pt.gz"))) == 3
    assert [p.name for p in (partial / "fresh-ais").glob("batch-*.pt.gz")] == ["batch-000000.pt.gz"]
    monkeypatch.undo()

    calls.clear()
    stopping("ais", None)
    stopping("optimize_local", None)
    assert main(["gaps", str(stopped), *GAPS]) == 0
    assert calls == {"ais": 2}  # the fresh AIS of batches 1 and 2; everything else read back
    assert "continued a stopped measurement: 4 batches" in capsys.readouterr().err
    timing = json.loads((stopped / "gaps.json").read_text())
    assert timing["batches_resumed"] == 4 and timing["batches_untimed"] == 0
    assert timing["seconds_total"] > timing["seconds"]  # with the time the 4 batches read back had taken
    assert _same_gaps(whole, stopped)["log_p_hat"]["bound"] == "AIS"


def test_sharded_report_evaluate_equals_one_process(ddp_run, tmp_path):
    """`torchrun -m vaelab report RUN --evaluate` runs the IS and AIS evaluations of both splits sharded (3 batches
    of 100, 100 and 50 points each): the per-point values and the table equal one process's with --batch-seeds."""
    from vaelab.app.cli import main

    copies = [tmp_path / "sharded", tmp_path / "single"]
    for copy in copies:
        shutil.copytree(ddp_run[0], copy)
    report = ["--evaluate", "--samples", "10", "--subset", "250", "--ais", "aiwae", "chains=2", "temps=5", "leapfrog=1"]
    report += ["--no-progress"]
    out = torchrun("-m", "vaelab", "report", str(copies[0]), *report, "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert out.count("| run |") == 1, out  # the table, printed by rank 0 alone
    assert main(["report", str(copies[1]), *report, "--batch-seeds", "--out", str(tmp_path / "b")]) == 0
    for split in ("test", "train"):
        for stem in (f"eval-{split}", f"eval-{split}-ais"):
            sharded, single = (torch.load(c / f"{stem}-per-example.pt", weights_only=True) for c in copies)
            assert sharded.keys() == single.keys(), stem
            for k in single:  # exactly equal (NaN where one replicate has no spread)
                torch.testing.assert_close(sharded[k], single[k], rtol=0, atol=0, equal_nan=True, msg=f"{stem} {k}")
    tables = [(tmp_path / d / "table1.csv").read_text().replace("sharded", "single") for d in ("a", "b")]
    assert tables[0] == tables[1] and "250" in tables[0]


def test_ddp_resume_matches_and_ranks_agree(tmp_path):
    """Under DDP a run resumed after epoch 1 matches the uninterrupted run number for number (metrics, weights);
    AIWAE's adapted step sizes, a VampPrior's pseudo-inputs and SIWAE's burn-in leave every rank with the same
    state; the DDP run resumes in one process (another world size: ceil(601 / 100) = 7 steps per epoch, not 4); and a
    CP-VAE's category columns agree over the ranks and with one process's over the whole validation set."""
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

    # a CP-VAE's category columns: the same on both ranks, and those of one process over the whole validation set
    cp0, cp1 = (torch.load(tmp_path / f"cpvae-rank{r}.pt", weights_only=True) for r in (0, 1))
    logged = rows(tmp_path / "cpvae")[0]
    assert cp0["validate"] == cp1["validate"]
    columns = ("q_c_perplexity", "categories_used", "majority_accuracy", "hungarian_accuracy")
    assert {k: cp0["validate"][k] for k in columns} == pytest.approx({k: logged[k] for k in columns})
    run = build_run(load_config(None, [*SETTINGS, *CPVAE]), tmp_path / "cpvae", "cpu")
    run.model.load_state_dict(cp0["weights"])
    x, labels = run.dataset.split("valid")[:101], run.dataset.labels("valid")[:101]
    probs = category_probabilities(run.model, x)
    q_c, pred = probs.double().mean(0), probs.argmax(1)
    assert logged["q_c_perplexity"] == pytest.approx(float(torch.exp(-(q_c * q_c.log()).sum())), rel=1e-6)
    assert logged["categories_used"] == pred.unique().numel()
    assert logged["hungarian_accuracy"] == pytest.approx(hungarian_accuracy(pred, labels, classes=2))


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
