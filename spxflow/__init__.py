"""spxflow: SPHEREx forced-photometry spectra for catalog positions, as a Snakemake workflow."""

__version__ = "0.1.0"
