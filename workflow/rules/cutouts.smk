# Cutouts are bounded on disk (max_live_cutout_gb, spxflow/diskbudget.py): a job waits until
# its source's cutouts fit. The low priority makes ready photometry jobs (which free cutouts)
# run before new fetches, so waiting fetches do not hold every core.
rule cutouts:
    input:
        "results/discovery/{source}.parquet",
    output:
        cutouts=cutouts_output(),
        index="results/cutouts/{source}.json",
    log:
        "logs/cutouts/{source}.log",
    benchmark:
        "logs/benchmarks/cutouts/{source}.tsv"
    priority: -1
    retries: 2
    group:
        "per_source"
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(1000),
        runtime=runtime_scaled(30),
    params:
        target=get_target,
        archive=ARCHIVE_SCIENCE,
    script:
        "../../scripts/cutouts.py"
