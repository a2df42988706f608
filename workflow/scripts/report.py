from emsrbench.steps import run

run(snakemake, "report")  # noqa: F821  (snakemake is injected by the script directive)
