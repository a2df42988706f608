# emsrbench: super-resolution of serial-section EM at 8x/16x, scored as a leaderboard.
#   snakemake --cores 2                              default run (phantom, quick preset)
#   snakemake --configfile config/paper.yaml ...     the study's CREMI setting
#   snakemake --cores 8 --profile slurm              on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Validates the config (one-line errors, then snakemake.utils.validate with schema defaults).
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/degrade.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/gpemsr.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        PLAN.leaderboard(),
        PLAN.report_page(),
    default_target: True
