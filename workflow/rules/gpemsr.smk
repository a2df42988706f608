# GPEMSR (issue #4): the methods with `stage_rules: gpemsr` train in three stages, one rule each,
# each resuming from its checkpoints:
#   gpemsr_stage1   once per stage I setting (not per scale)  models/<m>/stage1-<key>.pt
#   gpemsr_stage2   per scale                                  models/<m>/x<s>/stage2-<key>.pt
#   gpemsr_stage3   per scale, the model the infer rule reads  models/<m>/x<s>/model.pt
# Checkpoints: checkpoints/<stage>/ beside each file; a job resumes only from a checkpoint of
# its own fingerprint (data, settings, upstream stage files, pretrained files: emsrbench.train.fit).
# Ablation variants (method.yaml `variants`, all but the first): stage III per variant under
# models/<m>/<variant>/x<s>/, their own infer/evaluate rules, and `snakemake ablations`
# (results/ablations/leaderboard.md). Keys name the settings a stage depends on
# (emsrbench.gpemsr.config.stage_key), so variants share stage I/II files where they can.
# A method on released weights (`method_presets: {gpemsr: released}`) trains nothing: rule
# gpemsr_released writes its models/<m>/x<s>/model.pt from the study's stage III file.

from emsrbench.gpemsr.config import OWN_VARIANT as GPEMSR_OWN_VARIANT

# GPEMSR (its StagePlan) is built in common.smk, with PLAN.
GPEMSR_METHODS = GPEMSR.methods or ["__none__"]
GPEMSR_RELEASED = GPEMSR.released or ["__none__"]
GPEMSR_VARIANTS = sorted({v for m, v in PLAN.variants() if m in GPEMSR.methods}) or ["__none__"]
# GPEMSR's three stages are the run's longest chain (stage III alone is the longest job of the
# default run): started first, they run beside the other jobs instead of alone at the end of the
# run, where one core would idle (issue #15). Snakemake starts higher-priority jobs first.
GPEMSR_CHAIN_PRIORITY = 10
GPEMSR_PRIOR_VARIANTS = sorted({v for m in GPEMSR.methods for v in GPEMSR.prior_variants(m)}) or ["__none__"]


rule gpemsr_stage1:
    input:
        train=lambda w: PLAN.degraded("train", GPEMSR.stage1_scale()),
    output:
        f"{RESULTS}/models/{{method}}/stage1-{{key}}.pt",
    params:
        **GPEMSR.rule_params("vqgan", METHODS_DIR),
        ckpt_dir=lambda w: GPEMSR.checkpoints(f"{RESULTS}/models/{w.method}", f"stage1-{w.key}"),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        key="[0-9a-f]{10}",
    priority: GPEMSR_CHAIN_PRIORITY
    threads: method_threads("train")
    resources:
        mem_mb=method_resource("train", "mem_mb"),
        runtime=method_resource("train", "runtime"),
        gpu=method_resource("train", "gpus"),
    log:
        f"{RESULTS}/logs/gpemsr_stage1/{{method}}-{{key}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_stage1/{{method}}-{{key}}.tsv"
    # Safe to retry: every stage resumes from its checkpoints and writes its file atomically.
    retries: 2
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


rule gpemsr_stage2:
    input:
        train=lambda w: PLAN.degraded("train", w.scale),
        stage1=lambda w: GPEMSR.prior_files(w.method, w.scale, GPEMSR.variant_of_stage2(w.method, w.scale, w.key))["stage1"],
    output:
        f"{RESULTS}/models/{{method}}/x{{scale}}/stage2-{{key}}.pt",
    params:
        **GPEMSR.rule_params("indexer", METHODS_DIR),
        ckpt_dir=lambda w: GPEMSR.checkpoints(f"{RESULTS}/models/{w.method}/x{w.scale}", f"stage2-{w.key}"),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        key="[0-9a-f]{10}",
    priority: GPEMSR_CHAIN_PRIORITY
    threads: method_threads("train")
    resources:
        mem_mb=method_resource("train", "mem_mb"),
        runtime=method_resource("train", "runtime"),
        gpu=method_resource("train", "gpus"),
    log:
        f"{RESULTS}/logs/gpemsr_stage2/{{method}}-x{{scale}}-{{key}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_stage2/{{method}}-x{{scale}}-{{key}}.tsv"
    retries: 2
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


# The method's own row: the model file the generic infer rule reads (the generic train rule
# leaves methods with stage_rules out of its wildcard constraint).
rule gpemsr_stage3:
    input:
        unpack(GPEMSR.stage3_input),
    output:
        f"{RESULTS}/models/{{method}}/x{{scale}}/model.pt",
    params:
        **GPEMSR.rule_params("fusion", METHODS_DIR),
        ckpt_dir=lambda w: GPEMSR.checkpoints(f"{RESULTS}/models/{w.method}/x{w.scale}", "stage3"),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
    priority: GPEMSR_CHAIN_PRIORITY
    threads: method_threads("train")
    resources:
        mem_mb=method_resource("train", "mem_mb"),
        runtime=method_resource("train", "runtime"),
        gpu=method_resource("train", "gpus"),
    log:
        f"{RESULTS}/logs/gpemsr_stage3/{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_stage3/{{method}}-x{{scale}}.tsv"
    retries: 2
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


# The study's released stage III file (config/pretrained.yaml gpemsr_stage3_x<s>, put in
# pretrained_dir by hand) as the model file, flagged "released weights" (emsrbench.gpemsr.install).
# Not an input (the start-up check stops a run without it); its sha256 is a param, so a new
# or changed file reinstalls the model and reruns what reads it.
rule gpemsr_released:
    output:
        f"{RESULTS}/models/{{method}}/x{{scale}}/model.pt",
    params:
        **GPEMSR.released_params(METHODS_DIR),
    wildcard_constraints:
        method="|".join(GPEMSR_RELEASED),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
        gpu=0,
    log:
        f"{RESULTS}/logs/gpemsr_released/{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_released/{{method}}-x{{scale}}.tsv"
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


# -- ablation variants -------------------------------------------------------------------


rule gpemsr_stage3_variant:
    input:
        unpack(GPEMSR.stage3_input),
    output:
        f"{RESULTS}/models/{{method}}/{{variant}}/x{{scale}}/model.pt",
    params:
        **GPEMSR.rule_params("fusion", METHODS_DIR),
        ckpt_dir=lambda w: GPEMSR.checkpoints(f"{RESULTS}/models/{w.method}/{w.variant}/x{w.scale}", "stage3"),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        variant="|".join(GPEMSR_VARIANTS),
    threads: method_threads("train")
    resources:
        mem_mb=method_resource("train", "mem_mb"),
        runtime=method_resource("train", "runtime"),
        gpu=method_resource("train", "gpus"),
    log:
        f"{RESULTS}/logs/gpemsr_stage3/{{method}}-{{variant}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_stage3/{{method}}-{{variant}}-x{{scale}}.tsv"
    retries: 2
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


rule gpemsr_infer_variant:
    input:
        lr=lambda w: PLAN.test_file(w.scale),
        model=lambda w: PLAN.variant_model_file(w.method, w.variant, w.scale),
    output:
        f"{RESULTS}/sr/{{method}}/{{variant}}/x{{scale}}.h5",
    params:
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        model=lambda w: PLAN.preset_of(w.method, variant=w.variant)["model"],
        settings=lambda w: PLAN.infer_layers(w.method),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        variant="|".join(GPEMSR_VARIANTS),
    threads: method_threads("infer")
    resources:
        mem_mb=method_resource("infer", "mem_mb"),
        runtime=method_resource("infer", "runtime"),
        gpu=method_resource("infer", "gpus"),
    log:
        f"{RESULTS}/logs/infer/{{method}}-{{variant}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{{method}}-{{variant}}-x{{scale}}.tsv"
    retries: 1
    conda:
        method_env
    script:
        "../scripts/infer.py"


# Tidy rows with method = the method, variant = the variant (emsrbench.steps.evaluate).
rule gpemsr_evaluate_variant:
    input:
        sr=f"{RESULTS}/sr/{{method}}/{{variant}}/x{{scale}}.h5",
        hr=lambda w: PLAN.test_file(w.scale),
    output:
        f"{RESULTS}/metrics/{{method}}/{{variant}}/x{{scale}}.csv",
    params:
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        lpips=PLAN.lpips_enabled(),
        intervals=PLAN.intervals(),
        pretrained_dir=PLAN.pretrained_dir,
        pretrained=PLAN.pretrained_state(PLAN.lpips_pretrained()),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        variant="|".join(GPEMSR_VARIANTS),
    threads: 1
    log:
        f"{RESULTS}/logs/evaluate/{{method}}-{{variant}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{method}}-{{variant}}-x{{scale}}.tsv"
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/evaluate.py"


# Supplement Table 2: each stage I model (the model's own, shared by the stage III ablations,
# and the attention ablations') reconstructs the HR test sections once; rows prior_psnr /
# prior_lpips with variant = the variant owning that model ("full" included: never a
# leaderboard row), repeated per scale (emsrbench.gpemsr.reconstruct).
rule gpemsr_stage1_evaluate:
    input:
        model=lambda w: GPEMSR.prior_model(w.method, w.variant),
        hr=PLAN.test_file(GPEMSR.stage1_scale()),
    output:
        f"{RESULTS}/metrics/{{method}}/{{variant}}/stage1.csv",
    params:
        stage="reconstruct",
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        model=lambda w: PLAN.preset_of(w.method, GPEMSR.stage1_scale(), w.variant)["model"],
        scales=PLAN.scales,
        lpips=PLAN.lpips_enabled(),
        pretrained_dir=PLAN.pretrained_dir,
        pretrained=PLAN.pretrained_state(PLAN.lpips_pretrained()),
    wildcard_constraints:
        method="|".join(GPEMSR_METHODS),
        variant="|".join(GPEMSR_PRIOR_VARIANTS),
    threads: method_threads("infer")
    resources:
        mem_mb=method_resource("infer", "mem_mb"),
        runtime=method_resource("infer", "runtime"),
        gpu=method_resource("infer", "gpus"),
    log:
        f"{RESULTS}/logs/gpemsr_stage1_evaluate/{{method}}-{{variant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gpemsr_stage1_evaluate/{{method}}-{{variant}}.tsv"
    conda:
        method_env
    script:
        "../scripts/gpemsr_stage.py"


# The methods with variants, each variant a row (display name "GPEMSR [no_pod]"); the stage I
# rows go to the tidy metrics.csv (the leaderboard tables show the SR metrics only).
rule ablation_leaderboard:
    input:
        # lazily: only `snakemake ablations` needs them (and fails without a method with variants)
        lambda w: GPEMSR.ablation_inputs(),
    output:
        csv=f"{RESULTS}/ablations/leaderboard.csv",
        md=f"{RESULTS}/ablations/leaderboard.md",
        tidy=f"{RESULTS}/ablations/metrics.csv",
    params:
        own_variant=GPEMSR_OWN_VARIANT,  # its stage-I rows join the model's own row
    log:
        f"{RESULTS}/logs/ablation_leaderboard.log",
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/leaderboard.py"


# `snakemake ablations`: every variant of every method that has variants, at every scale.
rule ablations:
    input:
        PLAN.ablation_leaderboard(),
