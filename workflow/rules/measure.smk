# Pixels and photometry of the sources of one chunk (`sources_per_job`) in one job,
# with every output at its per-source path: Snakemake costs per job, and a new interpreter per
# job costs seconds. Their discovery rows come from their batch's table (discovery.smk).
# Cutouts never become a directory() output; they live in data/cutouts/{source}/ while the job
# runs (bounded by max_live_cutout_gb) and are deleted when the source is measured unless
# cleanup=never. Products are a separate rule, so a deleted spectrum or plot is rebuilt from
# the measurements without re-downloading.
for chunk, members in CHUNKS.items():

    rule:
        name:
            f"measure_{chunk}"
        input:
            discovery=discovery_table(BATCH_OF[chunk]),
            calibration_index=CALIBRATION_INDEX,
        output:
            **record_then_outputs("measure", chunk, members),
        log:
            f"logs/measure/{chunk}.log",
        benchmark:
            f"logs/benchmarks/measure/{chunk}.tsv"
        retries: 2
        group:
            "per_chunk"
        conda:
            "../../envs/spxflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb_scaled(2000),
            runtime=runtime_scaled(60, len(members)),
        params:
            chunk=chunk,
            targets=chunk_targets(members),
            neighbours=chunk_neighbours(members),
            science=SCIENCE,
        script:
            "../../scripts/measure.py"
