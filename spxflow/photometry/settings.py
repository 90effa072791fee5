"""Photometry settings: the `photometry:` block of the config.

The defaults are the schema's (``workflow/schemas/config.schema.yaml``, their one home)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from spxflow.config import block_defaults
from spxflow.format import FLAG_BITS

_DEFAULTS = block_defaults("photometry")


@dataclass(frozen=True)
class PhotometrySettings:
    # FLAGS bits whose pixels are excluded from the fit (names of spec §1.4).
    mask_flags: tuple[str, ...] = tuple(_DEFAULTS["mask_flags"])
    # Half-width (native pixels) of the square fit window around the target pixel.
    fit_half_size_px: int = _DEFAULTS["fit_half_size_px"]
    # Catalog neighbours whose PSF can reach the window are fitted jointly within this margin.
    neighbour_margin_px: float = _DEFAULTS["neighbour_margin_px"]
    # detection_status: detected if S/N >= this, negative if S/N <= -this.
    detection_snr: float = _DEFAULTS["detection_snr"]
    # Quality limits used for result flags and science_recommended.
    max_psf_masked_frac: float = _DEFAULTS["max_psf_masked_frac"]
    min_psf_window_frac: float = _DEFAULTS["min_psf_window_frac"]
    max_cond_number: float = _DEFAULTS["max_cond_number"]
    blend_radius_px: float = _DEFAULTS["blend_radius_px"]
    blend_corr: float = _DEFAULTS["blend_corr"]
    # Fractional PSF-model error that the chi-square and core-residual tests allow, so that
    # the tests scale with flux (a bright, well-fit source is not penalised for its S/N).
    psf_model_tolerance: float = _DEFAULTS["psf_model_tolerance"]
    # Noise allowance (in sigma) of the chi-square and core-residual tests.
    quality_nsigma: float = _DEFAULTS["quality_nsigma"]
    core_radius_px: float = _DEFAULTS["core_radius_px"]
    # PSF model of QR2 images ("cube": the file's PSF plane; "epsf": the R7 ePSF library).
    qr2_psf: str = _DEFAULTS["qr2_psf"]
    # "r7": QR2 pixels x l3_flux_corrections; "native": QR2 on its own calibration scale.
    calibration_scale: str = _DEFAULTS["calibration_scale"]

    @classmethod
    def from_config(cls, block: dict | None) -> PhotometrySettings:
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"photometry: unknown key(s) {unknown}; known: {sorted(known)}")
        if "mask_flags" in block:
            names = tuple(block["mask_flags"])
            bad = [n for n in names if n not in FLAG_BITS]
            if bad:
                raise ValueError(
                    f"photometry.mask_flags: unknown FLAGS bit name(s) {bad}; "
                    f"known: {sorted(FLAG_BITS)}"
                )
            block["mask_flags"] = names
        settings = cls(**block)
        if settings.fit_half_size_px < 2:
            raise ValueError("photometry.fit_half_size_px must be >= 2")
        if settings.qr2_psf not in ("cube", "epsf"):
            raise ValueError(f"photometry.qr2_psf must be cube or epsf, got {settings.qr2_psf!r}")
        if settings.calibration_scale not in ("r7", "native"):
            raise ValueError(
                "photometry.calibration_scale must be r7 or native, "
                f"got {settings.calibration_scale!r}"
            )
        return settings

    def science_dict(self) -> dict:
        """Every setting that changes a measured number (all of them), JSON-ready."""
        d = asdict(self)
        d["mask_flags"] = sorted(d["mask_flags"])
        return d
