"""Image-quality metrics of SR volumes against HR: PSNR, SSIM (numpy/scipy) and LPIPS (torch).

``lpips`` itself is imported only when a model is loaded, so importing this package is cheap.
"""

from .image import check_pair, psnr_sections, psnr_volume, ssim_sections, ssim_volume
from .lpips_metric import ALEXNET_FILE, LpipsUnavailable, find_alexnet, load_lpips, lpips_sections

__all__ = [
    "ALEXNET_FILE",
    "LpipsUnavailable",
    "check_pair",
    "find_alexnet",
    "load_lpips",
    "lpips_sections",
    "psnr_sections",
    "psnr_volume",
    "ssim_sections",
    "ssim_volume",
]
