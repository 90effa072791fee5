# Everything a user reads for each source of a chunk, made from the measurements (never from
# cutouts, so a deleted product is rebuilt without re-downloading). The measure record lists
# the chunk's measured files. Plotting is guarded: a plot failure is recorded in the manifest
# and never costs the spectrum or provenance.
for chunk, members in CHUNKS.items():
    _products = stage_outputs("source_products", members)

    rule:
        name:
            f"source_products_{chunk}"
        input:
            measured=record_path("measure", chunk),
            calibration_index=CALIBRATION_INDEX,
        output:
            record=record_path("source_products", chunk),
            spectrum=_products["spectrum"],
            provenance=_products["provenance"],
            measurement_index=_products["measurement_index"],
            sed=report_outputs(_products["sed"], members, "../report/sed.rst", "SED"),
            qa=report_outputs(
                _products["qa"], members, "../report/qa_summary.rst", "QA summary"
            ),
            manifest=_products["manifest"],
        log:
            f"logs/source_products/{chunk}.log",
        benchmark:
            f"logs/benchmarks/source_products/{chunk}.tsv"
        retries: 1
        group:
            "per_chunk"
        conda:
            "../../envs/spxflow.yaml"
        resources:
            mem_mb=mem_mb_scaled(1500),
            runtime=runtime_scaled(10, len(members)),
        params:
            chunk=chunk,
            targets=chunk_targets(members),
            neighbours=chunk_neighbours(members),
            science=SCIENCE,
            plots=config["plots"],
        script:
            "../../scripts/source_products.py"
