"""Fixed-position PSF forced photometry of SPHEREx cutouts (Numba kernels).

``measure_cutouts`` measures every cutout of a source in one batched kernel call;
``model_images`` returns the data/model/residual images of one fit for QA.
"""

from spxflow.photometry.calibration import CalibrationSet
from spxflow.photometry.measure import measure_cutouts, measure_windows, model_images
from spxflow.photometry.result_flags import RESULT_FLAGS, describe
from spxflow.photometry.settings import PhotometrySettings

# Bump when a change alters measured numbers: it enters every measurement_id.
PHOTOMETRY_VERSION = "1.1"  # 1.1: R7 layout, ePSF, flux corrections

__all__ = [
    "PHOTOMETRY_VERSION",
    "RESULT_FLAGS",
    "CalibrationSet",
    "PhotometrySettings",
    "describe",
    "measure_cutouts",
    "measure_windows",
    "model_images",
]
