rule cutouts:
    input:
        "results/discovery/{source}.parquet",
    output:
        cutouts=cutouts_output(),
        index="results/cutouts/{source}.json",
    params:
        target=get_target,
        archive=ARCHIVE_SCIENCE,
    log:
        "logs/cutouts/{source}.log",
    benchmark:
        "logs/benchmarks/cutouts/{source}.tsv"
    group:
        "per_source"
    resources:
        mem_mb=mem_mb_scaled(1000),
        runtime=runtime_scaled(30),
    retries: 2
    script:
        "../../scripts/cutouts.py"
