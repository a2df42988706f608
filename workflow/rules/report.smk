# The leaderboard: tidy metrics of every method x scale, pivoted to CSV and Markdown.


rule leaderboard:
    input:
        PLAN.all_metrics(),
    output:
        csv=report(f"{RESULTS}/leaderboard.csv", category="Leaderboard"),
        md=report(f"{RESULTS}/leaderboard.md", category="Leaderboard"),
        tidy=f"{RESULTS}/metrics.csv",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/leaderboard.py"
