# spxflow: catalog positions -> SPHEREx Level-2 cutouts -> PSF forced photometry -> spectra.
# This file is the table of contents; each stage lives in workflow/rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/catalog.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/discovery.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/outputs.smk"
include: "workflow/rules/qa.smk"
include: "workflow/rules/summary.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
