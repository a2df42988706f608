# Image metrics of every SR volume against the HR test volume, as tidy rows.


rule evaluate:
    input:
        sr=f"{RESULTS}/sr/{{method}}/x{{scale}}.h5",
        hr=lambda w: PLAN.test_file(w.scale),
    output:
        f"{RESULTS}/metrics/{{method}}/x{{scale}}.csv",
        # replicates of the PSNR/SSIM/LPIPS intervals, for the leaderboard's paired ties
        bootstrap=f"{RESULTS}/metrics/{{method}}/x{{scale}}-bootstrap.npz",
    params:
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        lpips=PLAN.lpips_enabled(),
        intervals=PLAN.intervals(),
        pretrained_dir=PLAN.pretrained_dir,
        pretrained=PLAN.pretrained_state(PLAN.lpips_pretrained()),  # AlexNet of LPIPS: a new file reruns
    threads: 1
    log:
        f"{RESULTS}/logs/evaluate/{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}-x{{scale}}.tsv"
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/evaluate.py"
