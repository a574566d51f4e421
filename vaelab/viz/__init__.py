"""Pictures a person would rather look at than read: image grids, histograms, reliability diagrams and latents."""

from vaelab.viz.calibration import save_reliability_diagram
from vaelab.viz.grids import image_grid, save_image_grid, save_reconstructions
from vaelab.viz.latent import save_latent_figure
from vaelab.viz.plots import save_histogram, save_paired_figure

__all__ = [
    "image_grid",
    "save_histogram",
    "save_image_grid",
    "save_latent_figure",
    "save_paired_figure",
    "save_reconstructions",
    "save_reliability_diagram",
]
