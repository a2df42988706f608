from emsrbench.steps import run

run(snakemake, "infer")  # noqa: F821  (snakemake is injected by the script directive)
