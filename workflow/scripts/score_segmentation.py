from emsrbench.steps import run

run(snakemake, "score_segmentation")  # noqa: F821  (snakemake is injected by the script directive)
