"""What `vaelab sample` generates beyond plain prior draws: CP-VAE generations by category (Lavda et al., sec. 5:
Figure 7, one row per category) and histograms of one-dimensional generations against the data (Figures 3-4).

A CP-VAE draws c from the aggregated posterior q(c) over the training set (eq. 14, the paper's choice; written to
`aggregated_posterior.json` in the output directory), from the uniform p(c) = 1/K, or fixes it to one category;
then z ~ p(z | c) (eq. 5) and x from p(x | z).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.models.cpvae import aggregated_posterior, conditional_pair, draw_categories, generate, is_cpvae
from vaelab.viz.grids import save_image_grid
from vaelab.viz.samples1d import save_sample_histograms

CATEGORY_SOURCES = ("posterior", "uniform")
MAX_ROWS = 20  # rows of clusters.png: all categories up to this many, else the most used under q(c) (or the first)
PER_ROW = 10
MIN_HISTOGRAM_SAMPLES = 10_000


def _train_data(run) -> Tensor:
    x = run.dataset.split("train")
    return x[: run.cfg.data.subset] if run.cfg.data.subset else x


def category_weights(run, categories: str, out: Path) -> Tensor:
    """The distribution c is drawn from, `[K]`: q(c) over the training set (`"posterior"`, eq. 14, also written to
    `out/aggregated_posterior.json`) or uniform (`"uniform"`)."""
    if categories not in CATEGORY_SOURCES:
        raise ConfigError(f"categories must be one of {', '.join(CATEGORY_SOURCES)}, not {categories!r}")
    family, _ = conditional_pair(run.model, "drawing categories")
    if categories == "uniform":
        return torch.full((family.categories,), 1.0 / family.categories, dtype=torch.float64)
    data = _train_data(run)
    q_c = aggregated_posterior(run.model, data, run.cfg.data.eval_batch_size)
    record = {"split": "train", "n": data.shape[0], "q_c": q_c.tolist()}
    (out / "aggregated_posterior.json").write_text(json.dumps(record) + "\n")
    return q_c


def check_cluster(run, cluster: int) -> None:
    family, _ = conditional_pair(run.model, "--cluster")
    if not 0 <= cluster < family.categories:
        raise ConfigError(f"--cluster must be a category in 0..{family.categories - 1}, got {cluster}")


def category_images(
    run, n: int, out: Path, seed: int, cluster: int | None = None, categories: str = "posterior"
) -> tuple[Tensor, str, list[Path]]:
    """CP-VAE image generations: (`n` samples `[n, *event]`, the file name for them, extra files written).

    With `cluster` all n come from that category (`samples-cluster<k>.png`); otherwise c is drawn from
    `categories` (`samples.png`) and `clusters.png` gets one row of 10 per category (Figure 7)."""
    if cluster is not None:
        check_cluster(run, cluster)
        return generate(run.model, torch.full((n,), cluster)).cpu(), f"samples-cluster{cluster}.png", []
    weights = category_weights(run, categories, out)
    g = torch.Generator().manual_seed(seed)
    samples = generate(run.model, draw_categories(weights, n, g)).cpu()
    k = weights.numel()
    if k <= MAX_ROWS or categories == "uniform":  # every category (the first 20 of many when c is uniform)
        rows = torch.arange(min(k, MAX_ROWS))
    else:  # the most used categories under q(c)
        rows = weights.argsort(descending=True)[:MAX_ROWS]
    grid = generate(run.model, rows.repeat_interleave(PER_ROW)).cpu()
    return samples, "samples.png", [save_image_grid(grid, out / "clusters.png", rows=rows.numel())]


def histograms_1d(run, n: int, out: Path, seed: int, cluster: int | None = None) -> Path:
    """`samples-histogram.png`: max(n, 10,000) draws x ~ p(x) over the training data's histogram. A CP-VAE gets a
    panel with c ~ q(c) and one with c ~ uniform (Figure 4), and one with c = `cluster` if given."""
    n = max(n, MIN_HISTOGRAM_SAMPLES)
    g = torch.Generator().manual_seed(seed)
    if cluster is not None:
        check_cluster(run, cluster)
    panels = {}
    if is_cpvae(run.model):
        for source in CATEGORY_SOURCES:
            c = draw_categories(category_weights(run, source, out), n, g)
            panels[f"c ~ {'q(c)' if source == 'posterior' else 'uniform'}"] = generate(run.model, c, mean=False)
        if cluster is not None:
            panels[f"c = {cluster}"] = generate(run.model, torch.full((n,), cluster), mean=False)
    else:
        panels["x ~ p(x)"] = run.model.sample(n, mean=False)
    title = f"{run.cfg.name}: {n} generated points vs the training data"
    return save_sample_histograms(panels, _train_data(run), out / "samples-histogram.png", title)
