from emsrbench.steps import run

run(snakemake, "segment")  # noqa: F821  (snakemake is injected by the script directive)
