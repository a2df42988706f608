from emsrbench.steps import run

run(snakemake, "degrade")  # noqa: F821  (snakemake is injected by the script directive)
