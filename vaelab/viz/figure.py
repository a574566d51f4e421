"""What every picture shares: pyplot on the Agg backend (imported only when a picture is drawn, so importing
vaelab stays light) and writing a figure as PNG."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot`, switched to the non-interactive Agg backend (left as it is if that fails)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, title: str = "") -> Path:
    """Give `fig` the suptitle `title` (if any), lay it out tightly, write it to `path` (PNG) and close it."""
    import matplotlib.pyplot as plt  # already imported: `fig` was made with it

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
