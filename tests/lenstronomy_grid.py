"""The lenstronomy pixel grid that matches darklens's: n x n pixels centred on the origin."""

from __future__ import annotations

import numpy as np


def lenstronomy_image_data(n_pix: int, pixel_scale: float):
    """lenstronomy ``ImageData`` (empty image) on darklens's ``pixel_grid`` coordinates."""
    from lenstronomy.Data.imaging_data import ImageData

    half = (n_pix - 1) / 2 * pixel_scale
    return ImageData(
        image_data=np.zeros((n_pix, n_pix)),
        ra_at_xy_0=-half,
        dec_at_xy_0=-half,
        transform_pix2angle=np.diag([pixel_scale, pixel_scale]),
    )
