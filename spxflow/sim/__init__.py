"""SPHEREx Level-2 simulator internals, QR2 and QR3/R7 (used by ``spxflow.archive.simulated``).

Modules: ``hashrng`` (counter-based random numbers keyed by pixel), ``wcs`` (TAN-SIP),
``spectral_model`` (CWAVE/CBAND/WCS-WAVE per release), ``psf_model`` (PSF cube, per-position
optical PSF + the rendering convention), ``sed`` (source spectra), ``timeline`` (slew times,
releases as time slices, processing tokens, l2b_retry copies), ``survey`` (pointings, OBSIDs,
discovery), ``discovery`` (SIA2 rows incl. retry and deep duplicates), ``sky`` (truth table,
field stars, zodi, airglow, solid angle, flux-correction map), ``flags`` (FLAGS plane),
``fitsout`` (raw FITS writer), ``r7`` (EPSF table, RICE_1 FLAGS), ``render`` (one cutout from its
parent-frame description), ``calproducts`` (calibration product files).
"""

# 2.0: QR3 (R7 layout) images; QR2 pixels divided by the l3_flux_corrections map.
SIM_VERSION = "spxsim-2.0"
