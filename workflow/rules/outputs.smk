# Everything a user reads for one source, made from the measurements (never from cutouts, so a
# deleted product is rebuilt without re-downloading). Plotting is guarded: a plot failure is
# recorded in the manifest and never costs the spectrum or provenance.
rule source_products:
    input:
        measurements="results/measurements/{source}.parquet",
        stamps="results/qa/{source}/{source}_stamps.npz",
        discovery="results/discovery/{source}.parquet",
        cutout_index="results/cutouts/{source}.json",
        calibration_index=CALIBRATION_INDEX,
    output:
        spectrum="results/spectra/{source}.csv",
        provenance="results/provenance/{source}_provenance.json",
        measurement_index="results/provenance/{source}_measurement_index.json",
        sed=report(
            "results/plots/{source}_sed.png",
            caption="../report/sed.rst",
            category="Sources",
            subcategory="{source}",
            labels={"source": "{source}", "figure": "SED"},
        ),
        qa=report(
            "results/qa/{source}/{source}_qa_summary.png",
            caption="../report/qa_summary.rst",
            category="Sources",
            subcategory="{source}",
            labels={"source": "{source}", "figure": "QA summary"},
        ),
        manifest="results/provenance/{source}_output_manifest.json",
    log:
        "logs/source_products/{source}.log",
    benchmark:
        "logs/benchmarks/source_products/{source}.tsv"
    retries: 1
    group:
        "per_source"
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(1500),
        runtime=runtime_scaled(10),
    params:
        target=get_target,
        neighbours=get_neighbours,
        science=SCIENCE,
        plots=config["plots"],
    script:
        "../../scripts/source_products.py"
