"""Photometry settings: the `photometry:` block of the config, with documented defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from spxflow.format import DEFAULT_MASK_FLAGS, FLAG_BITS


@dataclass(frozen=True)
class PhotometrySettings:
    # FLAGS bits whose pixels are excluded from the fit (names of spec §1.4).
    mask_flags: tuple[str, ...] = DEFAULT_MASK_FLAGS
    # Half-width (native pixels) of the square fit window around the target pixel.
    fit_half_size_px: int = 6
    # Catalog neighbours whose PSF can reach the window are fitted jointly within this margin.
    neighbour_margin_px: float = 5.0
    # detection_status: detected if S/N >= this, negative if S/N <= -this.
    detection_snr: float = 3.0
    # Quality limits used for result flags and science_recommended.
    max_psf_masked_frac: float = 0.4
    min_psf_window_frac: float = 0.95
    max_cond_number: float = 1.0e4
    blend_radius_px: float = 2.0
    blend_corr: float = 0.5
    # Fractional PSF-model error that the chi-square and core-residual tests allow, so that
    # the tests scale with flux (a bright, well-fit source is not penalised for its S/N).
    psf_model_tolerance: float = 0.03
    # Noise allowance (in sigma) of the chi-square and core-residual tests.
    quality_nsigma: float = 5.0
    core_radius_px: float = 2.5

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
        return settings

    def science_dict(self) -> dict:
        """Every setting that changes a measured number (all of them), JSON-ready."""
        d = asdict(self)
        d["mask_flags"] = sorted(d["mask_flags"])
        return d
