# Tiled super-resolution of the test volume by every method at every scale.


rule infer:
    input:
        lr=lambda w: PLAN.test_file(w.scale),
        model=lambda w: PLAN.model_file(w.method, w.scale) if PLAN.method(w.method).trains else [],
    output:
        f"{RESULTS}/sr/{{method}}/x{{scale}}.h5",
    params:
        preset=lambda w: PLAN.preset_name(w.method),
        methods_dir=METHODS_DIR,
        model=lambda w: PLAN.preset_of(w.method)["model"],
        settings=lambda w: PLAN.infer_layers(w.method),
    threads: method_threads("infer")
    resources:
        mem_mb=method_resource("infer", "mem_mb"),
        runtime=method_resource("infer", "runtime"),
        gpu=method_resource("infer", "gpus"),
    log:
        f"{RESULTS}/logs/infer/{{method}}-x{{scale}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/infer/{{method}}-x{{scale}}.tsv"
    retries: 1
    conda:
        method_env
    script:
        "../scripts/infer.py"
