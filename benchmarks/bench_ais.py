"""AIS throughput and AIWAE memory on the IWAE study's model (50 latents, tanh MLPs 2 x 200, Bernoulli).

    python benchmarks/bench_ais.py --threads 1          # throughput and memory tables (~8 min on a busy core)
    python benchmarks/bench_ais.py --threads 1 --quick  # smoke run (~3 min; fewer temperatures, sizes and T)
    python benchmarks/bench_ais.py --threads 1 --cpu-clock --chunking  # with and without chunks of chains (~4 min)

1. Throughput of `vaelab.mcmc.ais` (HMC transitions with step-size adaptation, init q(z|x)) at several batch
   sizes (chains x data points annealed together), in leapfrog gradient evaluations per second (chain x
   temperature x leapfrog step) and in all gradient evaluations grad_z log f_t (L per transition plus one at
   its start, where log f changes with beta), with the matmul FLOP rate as a fraction of the fp32 matmul peak.
   FLOPs per gradient evaluation of a batch of n latents: the decoder forward 2 n (50*200 + 200*200 + 200*784)
   and its backward to z, the same again (grad_z needs no weight gradients); elementwise work is not counted.
   From the rate at AIWAE's protocol batch (16 chains x 100 points), the time of the paper's NLL evaluation
   (16 chains x 10,000 temperatures x 10 leapfrog steps on the 10,000 MNIST test images).
2. Peak memory of one AIWAE training step (objective + backward, K = 5, batch 128, L = 5) against T (T = 1: no
   annealing, the IWAE-5 step), each T in a fresh subprocess: on the CPU the peak RSS (VmHWM, reset through
   /proc/self/clear_refs just before the step) minus the RSS before it, on CUDA `torch.cuda.max_memory_allocated`
   minus the memory allocated before it. For contrast, the bytes one gradient evaluation saves for backward
   (autograd saved-tensor hooks) times the (T - 1)(L + 1) evaluations: what a graph through the chain
   (back-propagating through the flow, as HVAE/HVI do) would have to hold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

LATENT, HIDDEN, DATA_DIM = 50, (200, 200), 784
PROTOCOL = {"chains": 16, "temps": 10_000, "leapfrog": 10, "points": 10_000, "batch": 100}  # AIWAE sec. 5.2


def iwae_model(device: str = "cpu"):
    """The IWAE study's model (configs/aiwae/mnist.yaml), freshly initialised, and static binarized MNIST test."""
    from vaelab.config import load_config
    from vaelab.config.build import build_model

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "aiwae" / "mnist.yaml")
    _, test = common.mnist_static()
    torch.manual_seed(0)
    return build_model(cfg.model, test.shape[1:]).to(device), test.to(device)


def grad_eval_flops(rows: int) -> int:
    """Matmul FLOPs of one grad_z log p(x, z) for `rows` latents: decoder forward and its backward to z."""
    return 2 * common.linear_flops(rows, (LATENT, *HIDDEN, DATA_DIM))


def throughput(args) -> None:
    from vaelab.mcmc import ais

    model, test = iwae_model()
    model.eval()
    temps = 6 if args.quick else 11
    sizes = [(16, 64), (16, 100), (5, 128), (50, 128)]
    if not args.quick:
        sizes.append((100, 64))
    peaks = [common.matmul_peak((1024, 2048))]
    rows_out, rates = [], {}
    for chains, points in sizes:
        x = test[:points]

        def run(chains=chains, x=x):
            return ais(model, x, chains=chains, schedule=temps, leapfrog_steps=10, init="posterior", progress=False)

        t = common.time_it(run, repeats=args.repeats or 2, warmup=1)
        print(f"measured {chains} chains x {points} points: {t.median:.2f} s per call", file=sys.stderr, flush=True)
        rows = chains * points
        leapfrog_evals = rows * (temps - 1) * 10
        all_evals = rows * (temps - 1) * 11
        rate = all_evals / t.median
        rates[(chains, points)] = rate
        rows_out.append(
            [
                f"{chains} x {points}",
                rows,
                leapfrog_evals / t.median,
                leapfrog_evals / t.best,
                rate,
                grad_eval_flops(1) * rate / 1e9,
                t.spread,
            ]
        )
    peaks.append(common.matmul_peak((1024, 2048)))
    peak = max(p for p, _ in peaks)
    for r in rows_out:
        r.insert(6, f"{100 * r[5] / peak:.0f}%")
    print(f"AIS, {temps} temperatures x 10 leapfrog steps per call; fp32 matmul peak {peak:.1f} GFLOP/s")
    header = [
        "chains x points",
        "batch",
        "leapfrog grads/s",
        "best",
        "all grads/s",
        "GFLOP/s",
        "of peak",
        "spread",
    ]
    print(common.table(rows_out, header))
    p = PROTOCOL
    rate = rates[(p["chains"], p["batch"])]
    evals = p["points"] * p["chains"] * (p["temps"] - 1) * (p["leapfrog"] + 1)
    hours = evals / rate / 3600
    print(
        f"\nAIWAE's NLL protocol ({p['chains']} chains x {p['temps']} temperatures x {p['leapfrog']} leapfrog steps, "
        f"{p['points']} test points, {p['batch']} points per batch): {evals:.3g} gradient evaluations; at "
        f"{rate:,.0f}/s (median, {p['chains']} x {p['batch']}) that is {hours:,.0f} hours = {hours / 24:.1f} days "
        f"on this machine ({torch.get_num_threads()} threads)."
    )


def memory_child(T: int, chains: int, batch: int, leapfrog: int, device: str) -> dict:
    """One AIWAE training step's peak memory above the pre-step level (run in a fresh process)."""
    from vaelab.objectives import AIWAE

    model, test = iwae_model(device)
    model.train()
    x = test[:batch]
    objective = AIWAE(chains=chains, temperatures=T, leapfrog_steps=leapfrog)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # one gradient evaluation's saved tensors
        z = model.posterior(x).sample((chains,)).requires_grad_(True)
        torch.autograd.grad(model.log_joint(x, z).sum(), z)
    del test
    before = _reset_peak(device)
    start = time.perf_counter()
    (-objective(model, x).mean()).backward()
    seconds = time.perf_counter() - start
    return {
        "T": T,
        "before": before,
        "increase": _peak(device) - before,
        "saved_per_eval": saved[0],
        "seconds": seconds,
    }


def chunking(args) -> None:
    """All gradient evaluations per second of `vaelab.mcmc.ais` (init q(z|x), 10 leapfrog steps, 4 temperatures)
    without chunks (`chunk_elements=0`) and with the chains in chunks of at most 2**19 or 2**20 (the CPU default)
    decoder outputs, timed in alternation; % of the fp32 matmul peak (matmul FLOPs only)."""
    from vaelab.mcmc import AISOptions, ais
    from vaelab.mcmc.ais import chains_per_chunk

    model, test = iwae_model()
    model.eval()
    temps, budgets = 4, (0, 2**19, 2**20)
    sizes = [(16, 100), (50, 128), (100, 64)]
    out = []
    peak = common.matmul_peak((1024,))[0]
    for chains, points in sizes:
        x = test[:points]
        opts = [AISOptions(chains=chains, temps=temps, init="posterior", seed=0, chunk_elements=b) for b in budgets]
        fns = [lambda o=o, x=x: ais(model, x, o, progress=False) for o in opts]
        for fn in fns:
            fn()  # warm-up
        timings = common.interleaved(fns, args.repeats or 5, [1] * len(fns))
        evals = chains * points * (temps - 1) * 11
        for o, t in zip(opts, timings, strict=True):
            per = chains_per_chunk(model, o, points, torch.device("cpu")) or chains
            rate = evals / t.median
            gflops = grad_eval_flops(1) * rate / 1e9
            out.append([f"{chains} x {points}", chains * points, o.chunk_elements, min(per, chains), rate, gflops,
                        gflops, t.spread])  # fmt: skip
    peak = max(peak, common.matmul_peak((1024,))[0])
    for r in out:
        r[6] = f"{100 * r[5] / peak:.0f}%"
    print(f"AIS chunking, {temps} temperatures x 10 leapfrog steps per call; fp32 matmul peak {peak:.1f} GFLOP/s")
    header = ["chains x points", "latents", "chunk_elements", "chains per chunk", "all grads/s", "GFLOP/s", "of peak",
              "spread"]  # fmt: skip
    print(common.table(out, header))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak(device: str) -> int:
    """Reset the peak-memory counter; returns the current usage in bytes. On the CPU, writing 5 to
    /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0); without it, the peak so
    far (ru_maxrss) stands in, which hides any increase below the load-time peak."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def _peak(device: str) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    Ts = (1, 5, 11, 50) if args.quick else (1, 5, 11, 50, 200)
    K, B, L = 5, 128, 5
    rows = []
    for T in Ts:
        threads = str(torch.get_num_threads())
        cmd = [sys.executable, __file__, "--threads", threads, "--memory-child", str(T), str(K), str(B), str(L), device]
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        through_chain = r["saved_per_eval"] * (T - 1) * (L + 1)
        rows.append([T, r["before"] / 2**20, r["increase"] / 2**20, through_chain / 2**20, r["seconds"]])
    what = "CUDA max_memory_allocated" if device == "cuda" else "peak RSS of a fresh process"
    print(f"\nAIWAE training step (K = {K}, batch {B}, L = {L}), {what}, MiB:")
    header = ["T", "before step", "increase in step", "graph through chain would hold", "step seconds"]
    print(common.table(rows, header))


def main() -> None:
    p = argparse.ArgumentParser(description="AIS throughput and AIWAE peak memory against T.")
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per batch size (default 2)")
    p.add_argument("--skip-throughput", action="store_true", help="only the memory table")
    p.add_argument("--skip-memory", action="store_true", help="only the throughput table")
    p.add_argument("--chunking", action="store_true", help="only AIS with and without chunks of chains (~4 min)")
    p.add_argument("--cpu-clock", action="store_true", help="time by thread CPU time (needs --threads 1)")
    p.add_argument("--memory-child", nargs=5, metavar=("T", "K", "B", "L", "DEVICE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    common.setup_threads(args.threads, args.cpu_clock)
    if args.memory_child:
        T, K, B, L, device = args.memory_child
        print(json.dumps(memory_child(int(T), int(K), int(B), int(L), device)))
        return
    print(common.machine_line())
    if common.load_avg_1min() > 0.5:
        print("warning: the machine is busy (1-minute load average above 0.5); figures will be noisy")
    if args.chunking:
        chunking(args)
        return
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
