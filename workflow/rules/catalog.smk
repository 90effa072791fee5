rule validate_catalog:
    input:
        config["catalog"],
    output:
        "results/catalog/catalog.csv",
    log:
        "logs/validate_catalog.log",
    benchmark:
        "logs/benchmarks/validate_catalog.tsv"
    retries: 1
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(1000),
        runtime=runtime_scaled(10),
    params:
        catalog=CATALOG_SETTINGS.to_params(),
    script:
        "../../scripts/validate_catalog.py"
