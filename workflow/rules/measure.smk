# Discovery, cutouts and photometry of one source in one job: the DAG stays at two jobs per
# source (Snakemake costs ~3 ms per job), and cutouts never become a directory() output; they
# live in data/cutouts/{source}/ while the job runs (bounded by max_live_cutout_gb) and are
# deleted when it succeeds unless cleanup=never. Products are a separate rule, so a deleted
# spectrum or plot is rebuilt from the measurements without re-downloading.
rule measure:
    input:
        calibration_index=CALIBRATION_INDEX,
    output:
        discovery="results/discovery/{source}.parquet",
        cutout_index="results/cutouts/{source}.json",
        measurements="results/measurements/{source}.parquet",
        stamps="results/qa/{source}/{source}_stamps.npz",
    log:
        "logs/measure/{source}.log",
    benchmark:
        "logs/benchmarks/measure/{source}.tsv"
    retries: 2
    group:
        "per_source"
    conda:
        "../../envs/spxflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(60),
    params:
        target=get_target,
        neighbours=get_neighbours,
        science=SCIENCE,
    script:
        "../../scripts/measure.py"
