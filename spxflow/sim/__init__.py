"""SPHEREx QR2 Level-2 simulator internals (used by ``spxflow.archive.simulated``).

Modules: ``hashrng`` (counter-based random numbers keyed by pixel), ``wcs`` (TAN-SIP),
``spectral_model`` (CWAVE/CBAND/WCS-WAVE), ``psf_model`` (PSF cube + the rendering convention),
``sed`` (source spectra), ``survey`` (pointings, OBSIDs, discovery), ``sky`` (truth table, field
stars, zodi, airglow, solid angle), ``flags`` (FLAGS plane), ``fitsout`` (raw FITS writer),
``render`` (one cutout from its parent-frame description).
"""

SIM_VERSION = "spxsim-1.0"
