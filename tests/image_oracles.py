"""Independent image computations shared by tests (scikit-image based)."""
import numpy as np


def skimage_y(u8: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr from scikit-image, rounded as MATLAB's rgb2ycbcr does for uint8 input."""
    from skimage.color import rgb2ycbcr

    return np.floor(rgb2ycbcr(u8)[..., 0] + 0.5)
