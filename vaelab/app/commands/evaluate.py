"""`vaelab evaluate RUN`: IS log-likelihood, ELBO and active units; with --ais, AIS; with --bdmc, BDMC.

Under torchrun (`torchrun --nproc_per_node N -m vaelab evaluate RUN`) the batches of points are shared out over
the ranks, each seeded by its index (for IS as `--batch-seeds`; AIS and BDMC always), and rank 0 writes and prints
the result (`runs.evaluate`, `runs.evaluate_ais`, `runs.evaluate_bdmc`). An AIS or BDMC evaluation keeps each batch's
result in the run directory as it is done, so that the same command continues a stopped one.

A run that `vaelab.fit` wrote for a model built in Python (`model.json`) is opened by `runs.open_run`: its model is
rebuilt as `vaelab.load` rebuilds it, and since `fit` trains on tensors, `--data` gives the data to evaluate (a
vaelab dataset or a tensor file); BDMC simulates its own."""

from __future__ import annotations

import argparse
import sys
import time

from vaelab.app.argtypes import deadline, duration, positive_int
from vaelab.app.commands import EPILOG, AddCommon, Subparsers
from vaelab.errors import UserError


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """Add the command's subparser to `sub`."""
    e = sub.add_parser(
        "evaluate",
        help="IS log-likelihood, ELBO and active units of a trained run",
        description="Estimate log p(x) by importance sampling (the IWAE bound with --samples per point), the ELBO "
        "and the number of active units on a split; writes RUN_DIR/eval-<split>.json. With --ais, estimate log p(x) "
        "by annealed importance sampling instead; writes RUN_DIR/eval-<split>-ais.json. With --bdmc, bound the error "
        "of such an AIS by BDMC on data simulated from the model; writes RUN_DIR/eval-bdmc.json. Printed errors are "
        "named: the Monte Carlo se (other draws; delta method for IS, trustworthy only at a healthy ESS) and the se "
        "over data (other data points).",
        epilog=EPILOG,
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train' or by vaelab.fit")
    e.add_argument(
        "--data",
        metavar="DATASET|FILE",
        help="for a run that vaelab.fit wrote (trained on tensors): the data to evaluate, a vaelab dataset (with "
        "--split) or a tensor file [N, *event] saved by torch.save (one split, named by the file's stem: "
        "eval-<stem>.json); its model is rebuilt as vaelab.load rebuilds it. --bdmc needs no data",
    )
    e.add_argument("--split", default=None, help="train, valid or test (default: the config's eval.split)")
    e.add_argument("--samples", type=positive_int, help="importance samples per point (default: config, 5000)")
    e.add_argument("--subset", type=positive_int, help="evaluate only the first N examples of the split")
    e.add_argument("--batch-size", type=positive_int, help="data points per batch (default: config)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default: best)")
    e.add_argument(
        "--batch-seeds",
        action="store_true",
        help="seed each batch of points by its index, as under torchrun, so that the per-point IS values are the same "
        "for any number of processes (default in one process: one stream through the batches)",
    )
    e.add_argument(
        "--ais",
        nargs="+",
        metavar="PRESET|KEY=VALUE",
        help="estimate log p(x) by annealed importance sampling instead, writing eval-<split>-ais.json: a preset, "
        "aiwae (16 chains x 10000 temperatures x 10 leapfrog steps from q(z|x), one step size adapted toward "
        "acceptance 0.6; Ding & Freedman's NLL script), aiwae_prior (16 chains x 10000 temperatures x 10 leapfrog "
        "steps from the prior) or cremer (100 chains x 500 temperatures x 10 leapfrog steps from the prior; Cremer "
        "et al.), then key=value "
        "overrides of chains, temps, leapfrog, schedule (linear, sigmoidal, geometric), init, step_size, "
        "target_acceptance, adapt (data, chain, all, none), adapt_rate, jitter, pilot_chains, batch_size, "
        "replicates (R independent runs per point, annealed together: their spread is the Monte Carlo se; the delta "
        "method within one run understates it), seed (default: the config's seed + 2; batch j of points uses "
        "derive_seed(seed, j)), chunk_elements (decoder outputs per gradient chunk on the CPU; 0: none); e.g. --ais "
        "cremer chains=10 replicates=4 (give RUN_DIR first). Each finished batch is saved in "
        "eval-<split>-ais-partial/, so the same command continues a stopped evaluation",
    )
    e.add_argument(
        "--bdmc",
        nargs="*",
        metavar="PRESET|KEY=VALUE",
        help="bidirectional Monte Carlo instead: simulate --subset points (default 100) from the model, run forward "
        "AIS (lower bound) and reverse AIS from the true latents (upper bound) with the --ais presets and settings, "
        "and print the gap, upper minus lower: the error bound of that AIS on such data; writes eval-bdmc.json",
    )
    e.add_argument(
        "--ais-init",
        choices=["prior", "posterior"],
        help="with --ais or --bdmc: start the chains at the prior p(z) (encoder-independent) or at the encoder's "
        "q(z|x)",
    )
    e.add_argument(
        "--stop-after",
        type=duration,
        metavar="DURATION",
        help="with --ais or --bdmc: stop, keeping the saved batches, rather than start a batch that would not end "
        "within DURATION of the start (2h30m, 90m, 5400), judged from the batches' recorded times (the first batch "
        "of a fresh evaluation always runs); exit status 75; the same command continues",
    )
    add_common(e)


def command(args: argparse.Namespace) -> int:
    """Run `vaelab evaluate`; the exit status."""
    from vaelab.app import runs

    args.started = time.monotonic()  # --stop-after counts from here
    if args.bdmc is not None or args.ais is not None or args.ais_init is not None:
        return _cmd_evaluate_bdmc(args) if args.bdmc is not None else _cmd_evaluate_ais(args)
    if args.stop_after is not None:
        raise UserError("--stop-after is for --ais and --bdmc, whose batches are saved as they finish")
    device = runs.rank_device(runs.run_settings(args.run_dir), args.device)  # under torchrun: this rank's
    run = runs.open_run(args.run_dir, args.checkpoint, device, args.data)
    e = run.cfg.eval
    result = runs.evaluate(
        run,
        args.split or e.split,
        args.samples or e.is_samples,
        args.subset if args.subset is not None else e.subset,
        args.batch_size or e.batch_size,
        e.max_elements,
        progress=not args.no_progress,
        predictive_samples=e.predictive_samples,
        batch_seeds=args.batch_seeds,
    )
    if result:  # {} on ranks other than 0
        print_eval(result)
    return 0


def _cmd_evaluate_ais(args) -> int:
    from vaelab.app import runs
    from vaelab.mcmc.options import parse_ais_options

    if args.ais is None:
        raise UserError("--ais-init needs --ais (a preset such as aiwae or cremer, and/or key=value settings)")
    options = parse_ais_options(args.ais, init=args.ais_init)  # before loading: a typo fails at once
    device = runs.rank_device(runs.run_settings(args.run_dir), args.device)  # under torchrun: this rank's
    run = runs.open_run(args.run_dir, args.checkpoint, device, args.data)
    e = run.cfg.eval
    subset = args.subset if args.subset is not None else e.subset
    r = runs.evaluate_ais(
        run, options, args.split or e.split, subset, args.batch_size or e.batch_size, not args.no_progress,
        deadline=deadline(args),
    )  # fmt: skip
    if not r:  # another rank than 0 under torchrun
        return 0
    _say_resumed(r, "eval-*-ais-partial")
    same = f"; IS (k={r['is_samples']}) on the same examples: {r['is_log_likelihood']:.2f}" if "is_samples" in r else ""
    mc = (
        f"Monte Carlo se {r['log_likelihood_mc_se']:.3f} from {r['replicates']} replicates"
        if r["replicates"] > 1
        else f"Monte Carlo se {r['log_likelihood_mc_se']:.3f} by the delta method in one run, which understates it: "
        "use replicates=R"
    )
    print(
        f"{r['dataset']} {r['split']} ({r['n']} examples): log p(x) ~ {r['log_likelihood']:.2f} ({mc}; se over data "
        f"{r['log_likelihood_se']:.2f}; AIS, {r['chains']} chains x {r['temps']} temperatures x {r['leapfrog']} "
        f"leapfrog steps from the {r['init']}), ({r['bits_per_dim']:.3f} bits/dim), ESS {r['ess_mean']:.1f}/"
        f"{r['chains']}, acceptance {r['acceptance_mean']:.2f}, {_took(r)}{same}"
    )
    if r["n_nonfinite"]:
        print(f"warning: {r['n_nonfinite']} of the {r['n']} AIS estimates are NaN or Inf; the means include them",
              file=sys.stderr)  # fmt: skip
    return 0


def _cmd_evaluate_bdmc(args) -> int:
    from vaelab.app import runs
    from vaelab.mcmc.options import parse_ais_options

    if args.ais is not None:
        raise UserError("give either --ais or --bdmc (whose presets and key=value settings are those of --ais)")
    options = parse_ais_options(args.bdmc, init=args.ais_init)
    device = runs.rank_device(runs.run_settings(args.run_dir), args.device)
    run = runs.open_run(args.run_dir, args.checkpoint, device, args.data)
    r = runs.evaluate_bdmc(run, options, args.subset or 100, not args.no_progress, deadline=deadline(args))
    if not r:
        return 0
    _say_resumed(r, "eval-bdmc-partial")
    print(
        f"{r['dataset']}: BDMC on {r['n']} points simulated from the model: log p(x) between {r['lower']:.2f} "
        f"(forward AIS) and {r['upper']:.2f} (reverse AIS), gap {r['gap']:.3f} (se over points {r['gap_se']:.3f}, "
        f"max {r['gap_max']:.3f}): the error bound of AIS with {r['chains']} chains x {r['temps']} temperatures x "
        f"{r['leapfrog']} leapfrog steps from the {r['init']} on such data (single-chain gap "
        f"{r['per_chain_gap']:.3f}), {_took(r)}"
    )
    return 0


def _took(r: dict) -> str:
    """This call's seconds, and for a continued evaluation those of the batches it read back as well."""
    if not r.get("batches_resumed"):
        return f"{r['seconds']:.0f} s"
    untimed = f", {r['batches_untimed']} of whose batches recorded no time" if r.get("batches_untimed") else ""
    return f"{r['seconds']:.0f} s ({r['seconds_total']:.0f} s with the batches read back{untimed})"


def _say_resumed(r: dict, where: str) -> None:
    kept = "kept for a longer evaluation of more points: run that one again to finish it, or delete the directory"
    if r.get("batches_resumed"):
        now = kept if r.get("partials_kept") else "now removed"
        read = f"{r['batches_resumed']} batch{'es were' if r['batches_resumed'] != 1 else ' was'} read"
        print(f"continued a stopped evaluation: {read} from {where}/ ({now})", file=sys.stderr)
    elif r.get("partials_kept"):
        print(f"{where}/ is {kept}", file=sys.stderr)


def print_eval(r: dict) -> None:
    """Print an `eval-<split>.json` result in one paragraph, with its reliability warnings on stderr."""
    if "accuracy" in r:  # a classifier; with a latent, the IS estimate is of its evidence log p(y) = log E_r p(y|z)
        bound = (
            f", evidence log E_r p(y|z) ~ {r['log_likelihood']:.4f} ({_is_errors(r, 4)}), ELBO {r['elbo']:.4f}"
            if "log_likelihood" in r
            else ""
        )
        print(
            f"{r['dataset']} {r['split']} ({r['n']} examples): accuracy {r['accuracy']:.4f}, "
            f"ECE {r['ece']:.4f} (Guo et al.), {r['ece_true_class']:.4f} (SIWAE app. B), "
            f"log p(y|x) {r['predictive_log_prob']:.4f} (predictive){bound}"
        )
        _warn_reliability(r)
        return
    print(
        f"{r['dataset']} {r['split']} ({r['n']} examples): "
        f"log p(x) ~ {r['log_likelihood']:.2f} ({_is_errors(r)}), "
        f"({r['bits_per_dim']:.3f} bits/dim), ELBO {r['elbo']:.2f} (se over data {r['elbo_se']:.2f}), "
        f"active units {r['active_units']}/{r['latent_dim']}"
    )
    if "data_log_likelihood" in r:  # generated data: the exact log p_data(x) of the same points
        print(
            f"exact log p_data(x) of the data's distribution {r['data_log_likelihood']:.4f} (se over data "
            f"{r['data_log_likelihood_se']:.4f}): the model's estimate is {r['gap_to_data']:.4f} +- "
            f"{r['gap_to_data_se']:.4f} below it, paired (KL(p_data || p_model) plus the estimator's bias)"
        )
    if "siwae_log_likelihood" in r:  # a mixture posterior: the stratified estimate from as many draws (SIWAE eq. 2)
        print(
            f"SIWAE evidence {r['siwae_log_likelihood']:.2f} (Monte Carlo se {r['siwae_log_likelihood_mc_se']:.3f}, "
            f"se over data {r['siwae_log_likelihood_se']:.2f}) "
            f"({r['components']} components x {r['siwae_draws_per_component']} draws)"
        )
    if "cpvae" in r:  # CP-VAE: the joint bound (paper Table 1's NVLB) and clustering accuracy
        c = r["cpvae"]
        acc = "".join(f", {k.split('_')[0]} accuracy {v:.4f}" for k, v in c.get("clustering", {}).items() if "acc" in k)
        print(
            f"CP-VAE: NVLB {c['nvlb']:.2f} +- {c['nvlb_se']:.2f} (KL(c) {c['kl_c']:.2f}, KL(z) {c['kl_z']:.2f}), "
            f"q(c) perplexity {c['q_c_perplexity']:.1f}/{c['categories']}{acc}"
        )
    _warn_reliability(r)


def _is_errors(r: dict, digits: int = 2) -> str:
    """The errors of an IS estimate, named: Monte Carlo se (delta method), se over data, k, ESS."""
    return (
        f"Monte Carlo se {r['log_likelihood_mc_se']:.{digits + 1}f}, se over data {r['log_likelihood_se']:.{digits}f}; "
        f"IS, k={r['is_samples']}, ESS median {r['ess_median']:.1f}, {100 * r['ess_low_share']:.1f}% of points < "
        f"{r['ess_low_threshold']}"
    )


def _warn_reliability(r: dict) -> None:
    """One stderr line per reason the IS estimate's numbers are unreliable (low ESS, non-finite values)."""
    from vaelab.evaluation.loglik import reliability_warnings

    if "log_likelihood" in r:
        for line in reliability_warnings(r):
            print(line, file=sys.stderr)
