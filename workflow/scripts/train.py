from emsrbench.steps import run

run(snakemake, "train")  # noqa: F821  (snakemake is injected by the script directive)
