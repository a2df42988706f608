from emsrbench.steps import run

run(snakemake, "fetch_weight")  # noqa: F821  (snakemake is injected by the script directive)
