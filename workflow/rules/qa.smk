# Full QA (qa_level: full): one PNG per measurement for each source of a chunk, never touching
# science outputs.
for chunk, members in CHUNKS.items():
    _qa = stage_outputs("qa_full", members)

    rule:
        # Drawn from the windows kept in the stamps file, or from cutouts where cleanup=never
        # kept them; otherwise full QA says so instead of re-downloading (spxflow.rules.qa_full).
        name:
            f"qa_full_{chunk}"
        input:
            measured=record_path("measure", chunk),
            calibration_index=CALIBRATION_INDEX,
        output:
            record=record_path("qa_full", chunk),
            pngs=[directory(p) for p in _qa["pngs"]],
            manifest=_qa["manifest"],
        log:
            f"logs/qa_full/{chunk}.log",
        benchmark:
            f"logs/benchmarks/qa_full/{chunk}.tsv"
        retries: 1
        conda:
            "../../envs/spxflow.yaml"
        threads: 2
        resources:
            mem_mb=mem_mb_scaled(2000),
            runtime=runtime_scaled(30, len(members)),
        params:
            chunk=chunk,
            targets=chunk_targets(members),
            neighbours=chunk_neighbours(members),
            science=SCIENCE,
            cutout_dir="data/cutouts",
        script:
            "../../scripts/qa_full.py"
