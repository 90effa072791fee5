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
        archive=ARCHIVE_SCIENCE,
    script:
        "../../scripts/calibration.py"
