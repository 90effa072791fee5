# Calibration products are per detector and shared by every source: fetched once.
rule calibration:
    output:
        "resources/calibration/{family}_D{detector}_spx_{token}.fits",
    params:
        archive=ARCHIVE_SCIENCE,
    log:
        "logs/calibration/{family}_D{detector}_{token}.log",
    benchmark:
        "logs/benchmarks/calibration/{family}_D{detector}_{token}.tsv"
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(20),
    retries: 2
    script:
        "../../scripts/calibration.py"
