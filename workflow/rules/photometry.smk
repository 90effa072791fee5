rule photometry:
    input:
        cutouts="data/cutouts/{source}",
        index="results/cutouts/{source}.json",
        calibration=CALIBRATION_FILES,
    output:
        measurements="results/measurements/{source}.parquet",
        stamps="results/qa/{source}/{source}_stamps.npz",
    params:
        target=get_target,
        neighbours=get_neighbours,
        photometry=PHOTOMETRY_SCIENCE,
        photometry_version=PHOTOMETRY_VERSION,
    log:
        "logs/photometry/{source}.log",
    benchmark:
        "logs/benchmarks/photometry/{source}.tsv"
    group:
        "per_source"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(30),
    retries: 2
    script:
        "../../scripts/photometry.py"
