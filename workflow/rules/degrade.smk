# Per-section lateral downsampling of every split piece, one file per piece and scale.


rule degrade:
    input:
        lambda w: PLAN.sample_file(PLAN.piece(w.split, w.index).sample),
    output:
        f"{RESULTS}/degraded/x{{scale}}/{{split}}-{{index}}.h5",
    params:
        piece=lambda w: PLAN.piece(w.split, w.index),
        degradation=config.get("degradation", {}),
        center_crop=config["data"].get("center_crop"),
        raw_key=config["data"].get("raw_key", "volumes/raw"),
        labels_key=config["data"].get("labels_key", "volumes/labels/neuron_ids"),
        resolution=config["data"].get("resolution"),  # for source files without a resolution attribute
        max_scale=max(PLAN.scales),
    log:
        f"{RESULTS}/logs/degrade/x{{scale}}-{{split}}-{{index}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/degrade/x{{scale}}-{{split}}-{{index}}.tsv"
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/degrade.py"
