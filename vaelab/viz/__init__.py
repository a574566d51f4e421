"""Pictures a person would rather look at than read: image grids and histograms."""

from vaelab.viz.grids import image_grid, save_image_grid, save_reconstructions
from vaelab.viz.plots import save_histogram

__all__ = ["image_grid", "save_histogram", "save_image_grid", "save_reconstructions"]
