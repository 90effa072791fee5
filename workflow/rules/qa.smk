# Full QA (qa_level: full): one PNG per measurement, never touching science outputs.
rule qa_full:
    # Drawn from the windows kept in the stamps file, or from cutouts where cleanup=never
    # kept them; otherwise full QA says so instead of re-downloading (spxflow.rules.qa_full).
    input:
        measurements="results/measurements/{source}.parquet",
        cutout_index="results/cutouts/{source}.json",
        stamps="results/qa/{source}/{source}_stamps.npz",
        calibration_index=CALIBRATION_INDEX,
    output:
        pngs=directory("results/qa/{source}/measurements"),
        manifest="results/qa/{source}/{source}_qa_manifest.json",
    log:
        "logs/qa_full/{source}.log",
    benchmark:
        "logs/benchmarks/qa_full/{source}.tsv"
    retries: 1
    conda:
        "../../envs/spxflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(30),
    params:
        target=get_target,
        neighbours=get_neighbours,
        science=SCIENCE,
        cutout_dir="data/cutouts/{source}",
    script:
        "../../scripts/qa_full.py"
