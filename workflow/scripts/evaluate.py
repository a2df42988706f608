from emsrbench.steps import run

run(snakemake, "evaluate")  # noqa: F821  (snakemake is injected by the script directive)
