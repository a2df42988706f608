# Source samples: generated (phantom), downloaded (cremi) or given (path: no rule needed).


rule phantom:
    output:
        f"{RESULTS}/data/{{sample}}.h5",
    params:
        spec=lambda w: PLAN.samples()[w.sample],
        resolution=config["data"].get("phantom", {}).get("resolution", [40, 4, 4]),
    log:
        f"{RESULTS}/logs/phantom/{{sample}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/phantom/{{sample}}.tsv"
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/phantom.py"


rule download_cremi:
    output:
        str(Path(config["data"].get("cremi", {}).get("dir", "data/cremi")) / "sample_{sample}.hdf"),
    params:
        spec=lambda w: PLAN.samples()[w.sample],
        verify_tls=config["data"].get("cremi", {}).get("verify_tls", True),
    log:
        f"{RESULTS}/logs/download_cremi/{{sample}}.log",
    retries: 3
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/download_cremi.py"


# Pretrained weights of config/pretrained.yaml: `snakemake fetch_weights` where the internet is
# reachable. Not an input of other rules (a job without a weight runs flagged, or with the paper
# preset the run stops at start-up); their params carry each file's state, so adding, removing
# or changing a weight file reruns exactly the jobs that read it.
rule fetch_weight:
    output:
        f"{PLAN.pretrained_dir}/{{file}}",
    params:
        pretrained_dir=lambda w, output: str(Path(output[0]).parent),
    wildcard_constraints:
        file="|".join(re.escape(w.file) for w in PRETRAINED.downloadable()),
    log:
        f"{RESULTS}/logs/fetch_weight/{{file}}.log",
    retries: 3
    conda:
        "../../envs/emsrbench.yaml"
    script:
        "../scripts/fetch_weight.py"


# Entries with `fetch: manual` (the GPEMSR study's Google Drive folder) cannot be downloaded by
# a program: skipped, with where to get them.
rule fetch_weights:
    input:
        [f"{PLAN.pretrained_dir}/{w.file}" for w in PRETRAINED.downloadable()],
    message:
        PRETRAINED.manual_note()
