from emsrbench.steps import run

run(snakemake, "score_hallucination")  # noqa: F821  (snakemake is injected by the script directive)
