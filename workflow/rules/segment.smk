# Segmentation evaluation (issue #5): two affinity networks trained once on HR training data,
# then HR ("hr", the upper bound), bicubic and every method's SR test volume segmented
# (blockwise affinities, 2D fragments + waterz) and scored against the test labels.
SEG = PLAN.segmentation()
SEG_NETS = PLAN.segment_networks() or ["__none__"]
SEG_TRAIN_RES = PLAN.segment_resources("train")
SEG_INFER_RES = PLAN.segment_resources("infer")


rule train_segmenter:
    input:
        train=PLAN.segment_train_files(),
    output:
        f"{RESULTS}/segmenters/{{net}}/model.pt",
    params:
        preset=SEG["preset"],
        override=SEG["train"],
        ckpt_dir=lambda w: f"{RESULTS}/segmenters/{w.net}/checkpoints",
        methods_dir=METHODS_DIR,  # the plan names what the model file must be made from
    wildcard_constraints:
        net="|".join(n for n in SEG_NETS if PLAN.segmenter_trained(n)) or "__none__",
    threads: job_threads(SEG_TRAIN_RES["cpus"])
    resources:
        mem_mb=SEG_TRAIN_RES["mem_mb"],
        runtime=SEG_TRAIN_RES["runtime"],
        gpu=SEG_TRAIN_RES["gpus"],
    log:
        f"{RESULTS}/logs/train_segmenter/{{net}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_segmenter/{{net}}.tsv"
    # Safe to retry: training resumes from its checkpoints and writes its output atomically.
    retries: 2
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/train_segmenter.py"


# Hallucination scores (issue #7): boundaries of each segmentation against the ground truth
# (invented / erased within segmentation.hallucination.tolerance_nm), segments without an
# IoU >= iou counterpart in the same network's HR segmentation (not for HR itself).
HALLU = PLAN.hallucination()
HALLU_NETS = PLAN.hallucination_networks()

# One job per network x method x scale segments the volume and scores the segmentation (and
# its hallucination): the three steps always run together, and one process instead of three
# saves two interpreter and library start-ups and two reads of the volumes per volume (issue
# #15). The job holds the network's GPU (if any) for its few seconds of CPU scoring too, and a
# changed scoring setting reruns the segmentation as well (seconds on the quick preset).
SEGMENT_OUTPUTS = {
    "seg": f"{RESULTS}/segment/{{net}}/{{method}}/x{{scale}}.h5",
    "rows": f"{RESULTS}/segment/{{net}}/{{method}}/x{{scale}}.csv",
    "sweep": f"{RESULTS}/segment/{{net}}/{{method}}/x{{scale}}-thresholds.csv",
    # replicates of the whole-volume score intervals (z-slab bootstrap), for the paired ties
    "bootstrap": f"{RESULTS}/segment/{{net}}/{{method}}/x{{scale}}-bootstrap.npz",
}
if HALLU_NETS:  # hallucination is on or off for every network (segmentation.hallucination.enabled)
    SEGMENT_OUTPUTS["hallucination"] = f"{RESULTS}/segment/{{net}}/{{method}}/x{{scale}}-hallucination.csv"


rule segment:
    input:
        raw=lambda w: PLAN.segment_raw(w.method, w.scale),
        model=lambda w: PLAN.segmenter_file(w.net),
        gt=lambda w: PLAN.test_file(w.scale),
        hr_seg=hr_segmentation,
    output:
        **SEGMENT_OUTPUTS,
    params:
        preset=SEG["preset"],  # the segmentation network's
        thresholds=SEG["thresholds"],
        scoring=SEG["scoring"],
        inference=SEG["inference"],
        run_preset=PLAN.preset,  # the preset of HR's score rows
        hr=PLAN.HR,
        border_nm=SEG["border_nm"],
        gt_labels=SEG["gt_labels"],
        intervals=PLAN.intervals(),
        tolerance_nm=HALLU["tolerance_nm"],
        iou=HALLU["iou"],
        methods_dir=METHODS_DIR,
    wildcard_constraints:
        net="|".join(SEG_NETS),
        method="|".join(PLAN.segment_methods()),
    threads: job_threads(SEG_INFER_RES["cpus"])
    resources:
        mem_mb=SEG_INFER_RES["mem_mb"],
        runtime=SEG_INFER_RES["runtime"],
        gpu=SEG_INFER_RES["gpus"],
    log:
        f"{RESULTS}/logs/segment/{{net}}-{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/segment/{{net}}-{{method}}-x{{scale}}.tsv"
    retries: 1
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/segment.py"
