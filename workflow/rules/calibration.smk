# Calibration products are per (release, detector) and shared by every source: fetched once.
# Each release's tokens differ, so the file name says which release a product belongs to.
rule calibration:
    output:
        "resources/calibration/{family}_D{detector}_spx_{token}.fits",
    log:
        "logs/calibration/{family}_D{detector}_{token}.log",
    benchmark:
        "logs/benchmarks/calibration/{family}_D{detector}_{token}.tsv"
    retries: 2
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(20),
    params:
        archive=SCIENCE["archive"],
        release=get_calibration_release,
    script:
        "../../scripts/calibration.py"


# One small index of the products (36 with QR2 and QR3): per-source jobs depend on it instead
# of on every file
# (DAG edges cost time at 10,000+ sources); it records every product's id and sha256, so a
# changed product still re-runs what used it.
localrules:
    calibration_index,


rule calibration_index:
    input:
        CALIBRATION_FILES,
    output:
        CALIBRATION_INDEX,
    log:
        "logs/calibration/calibration_index.log",
    benchmark:
        "logs/benchmarks/calibration/calibration_index.tsv"
    conda:
        "../../envs/spxflow.yaml"
    script:
        "../../scripts/calibration_index.py"
