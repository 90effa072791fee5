rule photometry:
    input:
        cutouts="data/cutouts/{source}",
        index="results/cutouts/{source}.json",
        calibration=CALIBRATION_FILES,
    output:
        measurements="results/measurements/{source}.parquet",
        stamps="results/qa/{source}/{source}_stamps.npz",
    log:
        "logs/photometry/{source}.log",
    benchmark:
        "logs/benchmarks/photometry/{source}.tsv"
    retries: 2
    group:
        "per_source"
    conda:
        "../../envs/spxflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(30),
    params:
        target=get_target,
        neighbours=get_neighbours,
        photometry=PHOTOMETRY_SCIENCE,
        photometry_version=PHOTOMETRY_VERSION,
    script:
        "../../scripts/photometry.py"
