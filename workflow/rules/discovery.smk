# Discovery of a batch of chunks (`discovery_batch_sources` sources) in one job, in bulk: IRSA
# answers many uploaded positions per TAP query, the simulator plans them in one pass. Every
# measure job takes its chunk's table, so the whole catalog's discovery is known before any
# pixel is read, and a measure job retried after an outage does not query discovery again.
# One table per batch (each measure job reads its chunk's rows): a rule with one output per
# chunk would cost Snakemake a scan of them for every measure job's input.
for batch, batch_chunks in BATCHES.items():

    rule:
        name:
            f"discover_{batch}"
        output:
            table=discovery_table(batch),
            record=record_path("discover", batch),
        log:
            f"logs/discover/{batch}.log",
        benchmark:
            f"logs/benchmarks/discover/{batch}.tsv"
        retries: 2
        conda:
            "../../envs/spxflow.yaml"
        resources:
            mem_mb=mem_mb_scaled(3000),
            runtime=runtime_scaled(30),
        params:
            batch=batch,
            chunks={chunk: CHUNKS[chunk] for chunk in batch_chunks},
            targets=chunk_targets([s for chunk in batch_chunks for s in CHUNKS[chunk]]),
            science=SCIENCE,
        script:
            "../../scripts/discover.py"
