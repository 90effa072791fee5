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
        options=config["catalog_options"],
        default_size=config["cutout_size_arcsec"],
    script:
        "../../scripts/validate_catalog.py"
