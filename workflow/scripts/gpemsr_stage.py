from emsrbench.steps import run

run(snakemake, "gpemsr_stage")  # noqa: F821  (snakemake is injected by the script directive)
