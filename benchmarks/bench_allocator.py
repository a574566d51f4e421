"""glibc malloc settings and the cost of a training step: CPU time, minor page faults and peak RSS per mode.

    python benchmarks/bench_allocator.py                                   # the four configs below, 5 repeats
    python benchmarks/bench_allocator.py --configs configs/cpvae/toy_k150.yaml --repeats 2 --out a.jsonl
    python benchmarks/bench_allocator.py --summary a.jsonl                 # the table of everything in a.jsonl

Each measurement is a fresh process (`--child`, so that the malloc environment and the peak RSS are its own) that
builds the model, objective and optimiser as `vaelab train` does (`recording.build_run`, `Trainer`), runs
`--warmup` steps of `Trainer._step` (forward, backward, finiteness checks, optimiser) on one torch thread, then
`--steps` timed steps, and reports per step the process CPU time (user + sys, `getrusage(RUSAGE_SELF)`) and the
minor page faults (`ru_minflt`), and the process's peak RSS (`ru_maxrss`). One untimed step more is counted by
`torch.utils.flop_counter` (its matmul FLOPs, forward and backward), so the table's GFLOP/s (counted FLOPs over the
median CPU time) says how close a config's step runs to this machine's matmul peak (`bench_core.py` prints it). Modes:

* default: glibc's own settings (a freed chunk above the dynamic mmap threshold, at most 32 MiB, goes back to the
  kernel, and the top of the heap is trimmed above twice that threshold: large tensors are page-faulted and
  zero-filled anew on every step);
* env: `MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824` in the
  child's environment (read by glibc when the process starts);
* mallopt: the same three settings through `mallopt` at run time, after torch is imported (what a library can do);
* vaelab: `vaelab.allocator.tune_malloc()`, what `vaelab` commands do at their start (M_MMAP_THRESHOLD 64 MiB,
  M_TRIM_THRESHOLD 1 GiB).

The modes run in rotation within every repeat (A B C D, B C D A, ...), so that a change in the machine's load hits
them alike. `--out FILE` appends every measurement to FILE (JSON lines) and prints the table of all of FILE's
lines, so that short invocations add up. Linux only (getrusage's fields, glibc's mallopt).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = (
    "configs/cpvae/toy_k150.yaml",
    "configs/vae_mnist_static.yaml",
    "configs/vampprior/hvae_vampprior_mnist_static.yaml",
    "configs/aiwae/mnist.yaml",
)
MODES = ("default", "env", "mallopt", "vaelab")
ENV = {
    "MALLOC_MMAP_THRESHOLD_": "17179869184",  # 16 GiB: nothing is mmap'ed on its own
    "MALLOC_TRIM_THRESHOLD_": "17179869184",  # the heap's top is not given back to the kernel
    "MALLOC_TOP_PAD_": "1073741824",  # each heap extension asks for 1 GiB more (address space, faulted on use)
}
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>


def apply_mallopt(mode: str) -> str:
    """The run-time modes: the env mode's three settings through `mallopt` (mallopt takes an int, so the two 16 GiB
    values become 2 GiB - 1: no tensor here comes near either), or `vaelab.allocator.tune_malloc`."""
    if mode == "vaelab":
        from vaelab.allocator import tune_malloc

        mib = os.environ.get("BENCH_MMAP_MIB")  # --mmap-mib: another threshold than the library's
        if not tune_malloc(mmap_threshold=int(mib) * 2**20) if mib else not tune_malloc():
            raise SystemExit("vaelab.allocator.tune_malloc did not apply (not glibc, or MALLOC_* set?)")
        return f"tune_malloc mmap {mib or 'default'} MiB"
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    for param, name in (
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
        (M_TOP_PAD, "MALLOC_TOP_PAD_"),
    ):
        if libc.mallopt(param, min(int(ENV[name]), 2**31 - 1)) != 1:
            raise SystemExit(f"mallopt({param}) failed")
    return "ctypes"


def child(mode: str, config: str, steps: int, warmup: int) -> dict:
    """One measurement in this process: `warmup` then `steps` training steps of `config`'s model; the figures."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vaelab import recording
    from vaelab.config import load_config
    from vaelab.train.trainer import Trainer

    how = apply_mallopt(mode) if mode in ("mallopt", "vaelab") else ""
    torch.set_num_threads(1)
    cfg = load_config(ROOT / config)
    run = recording.build_run(cfg, None, "cpu")
    trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "vaelab-bench", run.model, run.dataset, run.device)
    epoch = 1
    beta, entropy_weight = trainer._weights(epoch)
    trainer.objective.set_epoch(epoch)
    data = trainer.train_data(epoch)
    bs = cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    batches = [data[torch.randperm(data.shape[0], generator=g)[:bs]].contiguous() for _ in range(8)]
    trainer.model.train()

    def run_steps(n: int) -> None:
        for i in range(n):
            loss, _ = trainer._step(batches[i % len(batches)], beta, entropy_weight)
        float(loss)  # the trainer reads the loss back every few steps; nothing is left pending

    run_steps(warmup)
    with FlopCounterMode(display=False) as counter:  # one step's matmul FLOPs (forward and backward)
        run_steps(1)
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run_steps(steps)
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "config": config,
        "mode": mode,
        "how": how,
        "steps": steps,
        "cpu_s": cpu / steps,
        "gflop": counter.get_total_flops() / 1e9,
        "sys_s": (r1.ru_stime - r0.ru_stime) / steps,
        "wall_s": (w1 - w0) / steps,
        "minflt": (r1.ru_minflt - r0.ru_minflt) / steps,
        "maxrss_mb": r1.ru_maxrss / 1024,  # KiB on Linux
        "load": common.load_avg_1min(),
    }


def spawn(mode: str, config: str, steps: int, warmup: int, mmap_mib: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "VAELAB_MALLOC_TUNING"}
    env["OMP_NUM_THREADS"] = "1"
    if mode == "env":
        env.update(ENV)
    if mmap_mib:
        env["BENCH_MMAP_MIB"] = str(mmap_mib)
    cmd = [sys.executable, __file__, "--child", mode, config, "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(records: list[dict]) -> str:
    """Per config and mode: medians [min-max] over repeats, and the CPU time relative to the default mode."""
    rows = []
    configs = list(dict.fromkeys(r["config"] for r in records))
    for config in configs:
        by_mode = {m: [r for r in records if r["config"] == config and r["mode"] == m] for m in MODES}
        base = statistics.median(r["cpu_s"] for r in by_mode["default"]) if by_mode["default"] else None
        for mode, rs in by_mode.items():
            if not rs:
                continue
            cpu = [r["cpu_s"] * 1e3 for r in rs]
            med = statistics.median(cpu)
            rows.append(
                [
                    Path(config).stem if "/" not in config else config.removeprefix("configs/"),
                    mode,
                    len(rs),
                    f"{med:.1f} [{min(cpu):.1f}-{max(cpu):.1f}]",
                    f"{med / base / 1e3:.2f}" if base else "-",
                    f"{rs[0]['gflop'] / med * 1e3:.0f}" if "gflop" in rs[0] else "-",
                    f"{statistics.median(r['sys_s'] for r in rs) * 1e3:.1f}",
                    f"{statistics.median(r['minflt'] for r in rs):,.0f}",
                    f"{statistics.median(r['maxrss_mb'] for r in rs):,.0f}",
                    f"{min(r['load'] for r in rs):.1f}-{max(r['load'] for r in rs):.1f}",
                ]
            )
    header = (
        "config",
        "mode",
        "n",
        "CPU ms/step median [range]",
        "vs default",
        "GFLOP/s",
        "sys ms",
        "minflt/step",
        "RSS MB",
        "load",
    )
    return common.table(rows, header)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated config paths (default: four)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=5, help="processes per (config, mode) (default 5)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per process (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    p.add_argument("--mmap-mib", type=int, help="the vaelab mode with this M_MMAP_THRESHOLD (MiB; default 32)")
    p.add_argument("--out", type=Path, help="append the measurements to this JSON-lines file; table of all of it")
    p.add_argument("--summary", type=Path, help="print the table of a JSON-lines file and exit")
    p.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.warmup)))
        return
    if args.summary:
        print(summary([json.loads(line) for line in args.summary.read_text().splitlines() if line.strip()]))
        return
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(unknown)}")
    records = []
    for r in range(args.repeats):
        for config in args.configs.split(","):
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:  # rotate the order every repeat
                rec = spawn(mode, config, args.steps, args.warmup, args.mmap_mib)
                records.append(rec)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(rec) + "\n")
    if args.out:
        records = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(f"{common.cpu_model()}, torch 1 thread, load average {common.load_avg()}; {args.steps} steps per process")
    print(summary(records))
    import torch

    torch.set_num_threads(1)
    peak, n = common.matmul_peak((1024, 2048))
    print(f"fp32 matmul peak at 1 thread, now: {peak:.1f} GFLOP/s (n = {n}): the GFLOP/s column's ceiling")


if __name__ == "__main__":
    main()
