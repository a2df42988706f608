# One training job per trainable method and scale; resumes from its last checkpoint when
# that checkpoint's fingerprint (data, settings, pretrained files) is this job's (emsrbench.train.fit).


rule train:
    input:
        train=lambda w: PLAN.degraded("train", w.scale),
        val=lambda w: PLAN.degraded("val", w.scale),
    output:
        f"{RESULTS}/models/{{method}}/x{{scale}}/model.pt",
    params:
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        model=lambda w: PLAN.train_model(w.method),
        settings=lambda w: PLAN.train_layers(w.method),
        ckpt_dir=lambda w: f"{RESULTS}/models/{w.method}/x{w.scale}/checkpoints",
        pretrained_dir=PLAN.pretrained_dir,
        # {entry: sha256 or "absent"} of the pretrained files the method's training reads:
        # adding, removing or changing one reruns this job (Snakemake's params trigger)
        pretrained=lambda w: PLAN.pretrained_state(PLAN.pretrained_names(w.method)),
    wildcard_constraints:
        method="|".join(TRAINED),
    threads: method_threads("train")
    resources:
        mem_mb=method_resource("train", "mem_mb"),
        runtime=method_resource("train", "runtime"),
        gpu=method_resource("train", "gpus"),
    log:
        f"{RESULTS}/logs/train/{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{method}}-x{{scale}}.tsv"
    # Safe to retry: the trainer resumes from checkpoints and writes its output atomically.
    retries: 2
    conda:
        method_env
    script:
        "../scripts/train.py"
