# The leaderboard: tidy metrics of every method x scale (and segmentation and hallucination
# scores per segmenter), pivoted to CSV and Markdown.


rule leaderboard:
    input:
        metrics=PLAN.all_metrics() + PLAN.all_segment_scores() + PLAN.all_hallucination_scores(),
        # bootstrap replicates of the image and segmentation rows: paired tie marks against the best method
        bootstrap=PLAN.all_sidecars(),
    output:
        csv=report(f"{RESULTS}/leaderboard.csv", category="Leaderboard"),
        md=report(f"{RESULTS}/leaderboard.md", category="Leaderboard"),
        tidy=f"{RESULTS}/metrics.csv",
    params:
        # config reference_rows: published rows beside ours (emsrbench.published); {} without it
        published=PLAN.published_rows(),
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/leaderboard.py"


# The HTML report (results/report/index.html, self-contained) and its figures as PNG files;
# inputs from report_inputs (common.smk): every row under `snakemake`, the rows that exist
# under `snakemake report`.
rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(PLAN.report_page(), category="Report"),
        figures=report(directory(PLAN.report_figures()), patterns=["{name}.png"], category="Figures"),
    params:
        methods_dir=METHODS_DIR,
        repo=workflow.basedir,
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/report.py"
