# Calibration products are per detector and shared by every source: fetched once.
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
    script:
        "../../scripts/calibration.py"


# One small index of the 12 products: per-source jobs depend on it instead of on 12 files each
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
