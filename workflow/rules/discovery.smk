rule discovery:
    output:
        "results/discovery/{source}.parquet",
    log:
        "logs/discovery/{source}.log",
    benchmark:
        "logs/benchmarks/discovery/{source}.tsv"
    retries: 2
    group:
        "per_source"
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(1000),
        runtime=runtime_scaled(10),
    params:
        target=get_target,
        archive=ARCHIVE_SCIENCE,
    script:
        "../../scripts/discovery.py"
