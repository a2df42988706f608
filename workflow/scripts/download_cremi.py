from emsrbench.steps import run

run(snakemake, "download_cremi")  # noqa: F821  (snakemake is injected by the script directive)
