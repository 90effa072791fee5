rule discovery:
    output:
        "results/discovery/{source}.parquet",
    params:
        target=get_target,
        archive=ARCHIVE_SCIENCE,
    log:
        "logs/discovery/{source}.log",
    benchmark:
        "logs/benchmarks/discovery/{source}.tsv"
    group:
        "per_source"
    resources:
        mem_mb=mem_mb_scaled(1000),
        runtime=runtime_scaled(10),
    retries: 2
    script:
        "../../scripts/discovery.py"
