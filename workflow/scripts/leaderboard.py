from emsrbench.steps import run

run(snakemake, "leaderboard")  # noqa: F821  (snakemake is injected by the script directive)
