rule summary:
    input:
        catalog="results/catalog/catalog.csv",
        # The chunk records list each source's files (and come after its products).
        measured=get_records("measure"),
        products=get_records("source_products"),
    output:
        sources=report(
            "results/summary/sources.csv",
            caption="../report/sources.rst",
            category="Summary",
            labels={"table": "sources"},
        ),
        fits="results/summary/measurements.fits",
    log:
        "logs/summary.log",
    benchmark:
        "logs/benchmarks/summary.tsv"
    retries: 1
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(4000),
        runtime=runtime_scaled(30),
    script:
        "../../scripts/summary.py"


rule accuracy:
    input:
        measured=get_records("measure"),
    output:
        report(
            "results/validation/accuracy.csv",
            caption="../report/accuracy.rst",
            category="Summary",
            labels={"table": "accuracy vs truth"},
        ),
    log:
        "logs/accuracy.log",
    benchmark:
        "logs/benchmarks/accuracy.tsv"
    retries: 1
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(4000),
        runtime=runtime_scaled(30),
    script:
        "../../scripts/accuracy.py"


# Re-verify every manifest against the files on disk without re-running science:
# `snakemake check --forcerun check`. It has no inputs or outputs so it never triggers other
# jobs (it needs --forcerun: Snakemake skips it once its log exists); it writes
# results/check/check_report.json and fails if anything is missing, stale or tampered.
rule check:
    log:
        "logs/check.log",
    benchmark:
        "logs/benchmarks/check.tsv"
    conda:
        "../../envs/spxflow.yaml"
    resources:
        mem_mb=mem_mb_scaled(2000),
        runtime=runtime_scaled(30),
    params:
        provenance_dir="results/provenance",
        qa_dir="results/qa",
        report="results/check/check_report.json",
    script:
        "../../scripts/check.py"
