"""posterior-<split>.png (`vaelab.viz.posterior_pictures`, `vaelab.viz.posterior2d`): each input's column has its
own window around its draws, so posteriors that are small beside their spread over inputs (a trained 2-D VAE's)
are not drawn as dots on one shared square."""

from __future__ import annotations

import math

import torch

import vaelab.viz.posterior2d as posterior2d
from vaelab.viz.posterior_pictures import _grow_window, _window


def test_a_window_is_centred_on_the_draws_and_fits_them():
    z = torch.tensor([5.0, -3.0]) + 0.01 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    z[:3] = math.nan  # a q_IW draw with no finite weight
    cx, cy, half = _window(z)
    assert abs(cx - 5.0) < 0.002 and abs(cy + 3.0) < 0.002
    assert 0.03 < half < 0.1
    assert _window(torch.full((5, 2), math.nan)) == (0.0, 0.0, 1.0)
    assert _window(torch.zeros(10, 2))[2] == 0.05  # all draws at one point: the smallest window


def test_a_window_grows_to_hold_a_mode_that_the_draws_miss():
    """q's draws sit on one of two equal modes of p(z | x): the window widens to show the other, and a density
    that the draws cover (or one that is nowhere finite) leaves it as it was."""
    z = 0.1 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
    window = _window(z)
    modes = torch.tensor([[0.0, 0.0], [1.0, -0.5]], dtype=torch.float64)
    two = lambda zz: torch.logsumexp(-((zz[:, None] - modes) ** 2).sum(-1) / (2 * 0.1**2), -1)  # noqa: E731
    cx, cy, half = _grow_window(window, two)
    for m in modes.tolist():  # both modes, with room for their 0.1-wide peaks, inside
        assert (
            cx - half <= m[0] - 0.1 and m[0] + 0.1 <= cx + half and cy - half <= m[1] - 0.1 <= m[1] + 0.1 <= cy + half
        )
    assert half < 1.0  # no wider than it needs to be
    one = lambda zz: -(zz**2).sum(-1) / (2 * 0.1**2)  # noqa: E731
    assert _grow_window(window, one) == window
    assert _grow_window(window, lambda zz: torch.full(zz.shape[:1], -math.inf)) == window


def test_each_column_is_drawn_on_its_own_window(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(posterior2d, "save_figure", lambda fig, path, title="": figures.append(fig) or path)
    g = torch.Generator().manual_seed(1)
    draws = {"a": 0.02 * torch.randn(300, 2, generator=g) + 3.0, "b": 0.5 * torch.randn(300, 2, generator=g) - 1.0}
    windows = {name: _window(z) for name, z in draws.items()}
    density = {name: (lambda zz, m=z.mean(0): -((zz - m.double()) ** 2).sum(-1)) for name, z in draws.items()}
    posterior2d.save_posterior_panels({"q": draws}, tmp_path / "p.png", density, windows=windows, grid=30)
    (fig,) = figures
    for ax, (name, z) in zip(fig.axes, draws.items(), strict=True):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        cx, cy, half = windows[name]
        assert (x0, x1, y0, y1) == (cx - half, cx + half, cy - half, cy + half)
        inside = (z[:, 0] > x0) & (z[:, 0] < x1) & (z[:, 1] > y0) & (z[:, 1] < y1)
        assert inside.float().mean() > 0.98 and ax.collections  # the draws, and the density's contours
    assert fig.axes[0].get_xlim()[1] - fig.axes[0].get_xlim()[0] < 0.2  # the narrow one is not shown at b's size
