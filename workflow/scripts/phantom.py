from emsrbench.steps import run

run(snakemake, "phantom")  # noqa: F821  (snakemake is injected by the script directive)
