"""The study's released networks in the workflow (issue 13): `method_presets: {gpemsr:
released}`, the registry's hand-fetched entries, rule gpemsr_released and
config/paper-released.yaml.

No released file can be downloaded here. The workflow tests put stand-ins where the registry
looks: for dry runs any bytes do (the loader runs only in the job); the one real run of
gpemsr_released reads a synthetic stage III file in the release's exact paper layout, every
tensor a one-element storage broadcast to its shape (test_released_gpemsr.paper_release), so
the 70 M-parameter model costs kilobytes."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from emsrbench.errors import EmsrError
from emsrbench.fingerprint import check_planned
from emsrbench.gpemsr.install import NOT_TRAINED, RELEASED_FLAG, install_stage3
from emsrbench.plan import Plan
from emsrbench.pretrained import Pretrained, registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_released_gpemsr import paper_release  # noqa: E402

PAPER_RELEASED = REPO / "config" / "paper-released.yaml"
RELEASE_DIR = "gpemsr-cremi"
STAND_INS = ["stage3_x8.pth", "stage3_x16.pth", "superhuman.pt", "MALA.pt"]


def snakemake(work: Path, config: Path | list[Path], *args: str) -> subprocess.CompletedProcess:
    configs = [str(c) for c in (config if isinstance(config, list) else [config])]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "2",
        "--configfile",
        *configs,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def rule_counts(run: subprocess.CompletedProcess) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", run.stdout + run.stderr, re.M)}


def emsr_lines(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("emsrbench:")]


def stand_ins(work: Path) -> Path:
    folder = work / "weights" / RELEASE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in STAND_INS:
        (folder / name).write_bytes(f"a stand-in {name}".encode())
    return folder


def config_file(work: Path, **changes) -> Path:
    """config/paper-released.yaml with ``changes``; VGG19, SPyNet and AlexNet cannot be
    downloaded here: allowed missing (that opt-in never covers the released files)."""
    config = {**yaml.safe_load(PAPER_RELEASED.read_text()), "pretrained": {"allow_missing": True}, **changes}
    if "segmentation" in changes:  # no Table 1 column left to show the published rows in
        config["reference_rows"] = None
    path = work / "paper-released.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------- registry


def test_registry_lists_the_release_as_hand_fetched_and_unverified():
    reg = registry()
    files = {n: w.file for n, w in reg.items() if w.manual}
    assert files == {
        f"gpemsr_{n}": f"gpemsr-cremi/{n}.pth" for n in ("stage1", "stage2_x8", "stage2_x16", "stage3_x8", "stage3_x16")
    } | {"gpemsr_superhuman": "gpemsr-cremi/superhuman.pt", "gpemsr_mala": "gpemsr-cremi/MALA.pt"}
    for name in files:
        w = reg[name]
        assert w.sha256 is None and not w.verified and "1OhHJ0_Zx8VCxL2j6wsxoiXUgL_liTvxZ" in w.url
        assert "unverified" in w.notes and w.used_by
    # the downloaded entries keep their checksums
    assert all(w.verified for w in reg.values() if not w.manual)


def test_hand_fetched_entries_are_used_unverified_and_never_downloaded(tmp_path):
    pre = Pretrained(tmp_path)
    path, why, state = pre.lookup("gpemsr_stage3_x8")
    assert path is None and state == "absent" and "by hand from https://drive.google.com" in why
    with pytest.raises(EmsrError, match="download it by hand from https://drive.google.com"):
        pre.fetch("gpemsr_stage3_x8")
    stand_ins(tmp_path)
    pre = Pretrained(tmp_path / "weights")
    path, why, state = pre.lookup("gpemsr_stage3_x8")
    assert path == tmp_path / "weights" / RELEASE_DIR / "stage3_x8.pth" and why == ""
    assert state == hashlib.sha256(b"a stand-in stage3_x8.pth").hexdigest()
    note = pre.manual_note()
    assert "stage3_x8.pth" in note and "MALA.pt" in note and f"into {tmp_path / 'weights' / RELEASE_DIR}/" in note


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"fetch": "download", "sha256": None}, "only allowed with `fetch: manual`"),
        ({"fetch": "manual", "sha256": "xyz"}, "at least 8 hexadecimal digits"),
        ({"fetch": "someday", "sha256": None}, "'someday' is not one of"),
    ],
)
def test_registry_rejects_unverified_downloads(tmp_path, entry, message):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"net": {"file": "net.pth", "url": "https://example.invalid/net", **entry}}))
    with pytest.raises(EmsrError, match=re.escape(message)):
        registry(str(path))


# ---------------------------------------------------------------- plan


def test_method_presets_choose_a_preset_per_method(tmp_path):
    config = yaml.safe_load(PAPER_RELEASED.read_text())
    plan = Plan(config)
    assert plan.preset == "paper" and plan.preset_name("gpemsr") == "released" and plan.preset_name("rcan") == "paper"
    assert plan.is_released("gpemsr") and not plan.is_released("rcan")
    assert plan.preset_of("gpemsr", 16)["model"] == {"preset": "paper", "variant": "full"}  # the release's architecture
    assert plan.preset_of("gpemsr", 8)["train"] == {}
    assert plan.pretrained_names("gpemsr") == ["gpemsr_stage3_x16", "gpemsr_stage3_x8"]  # not vgg19 / spynet
    identity = plan.training_identity("gpemsr", 8).components
    assert identity["rule"] == "released" and identity["preset"] == "released" and identity["inputs"] == {}
    assert identity["pretrained"] == {"gpemsr_stage3_x8": "absent"}
    with pytest.raises(EmsrError, match="no variant 'no_pod': ablations are trained"):
        plan.preset_of("gpemsr", 8, "no_pod")
    for presets, message in [
        ({"nope": "paper"}, "method_presets.nope: not a method of this run"),
        ({"gpemsr": "fast"}, "method_presets.gpemsr: method 'gpemsr' has no preset 'fast'"),
        ({"rcan": "released"}, "method_presets.rcan: method 'rcan' has no preset 'released'"),
    ]:
        with pytest.raises(EmsrError, match=re.escape(message)):
            Plan({**config, "method_presets": presets})


# ---------------------------------------------------------------- install (library)


@pytest.fixture(scope="module")
def release_x8(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("release") / "weights" / RELEASE_DIR
    folder.mkdir(parents=True)
    return paper_release(folder, "stage3_x8")[0]


def test_install_writes_the_model_file_infer_reads(tmp_path, release_x8, monkeypatch):
    from emsrbench.infer import load_model

    config = yaml.safe_load(PAPER_RELEASED.read_text())
    plan = Plan({**config, "pretrained_dir": str(release_x8.parents[1])})
    planned = plan.training_identity("gpemsr", 8)
    digest = hashlib.sha256(release_x8.read_bytes()).hexdigest()
    assert planned.components["pretrained"] == {"gpemsr_stage3_x8": digest}  # the file's content
    out = tmp_path / "model.pt"
    install_stage3(
        release_x8,
        out,
        method="gpemsr",
        scale=8,
        model_params=plan.preset_of("gpemsr", 8)["model"],
        identity=planned,
        name="gpemsr_stage3_x8",
    )
    meta = torch.load(out, weights_only=True)
    assert meta["method"] == "gpemsr" and meta["scale"] == 8 and meta["preset"] == "released"
    assert meta["model_params"] == {"preset": "paper", "variant": "full"}
    assert meta["flags"] == [
        RELEASED_FLAG,
        f"flag: gpemsr_stage3_x8 unverified (no published checksum), sha256 {digest[:16]}",
    ]
    assert meta["released"] == {
        "entry": "gpemsr_stage3_x8",
        "file": "stage3_x8.pth",
        "sha256": digest,
        "verified": False,
    }
    assert meta["train_seconds"] != meta["train_seconds"] and meta["train_seconds_note"] == NOT_TRAINED
    assert 69e6 < meta["parameters"] < 71e6 and out.stat().st_size < 1e6  # broadcast tensors stay one element
    check_planned(out, meta["planned"], planned, "gpemsr x8 model")
    # infer builds the paper network and loads it (strict), with the plan's check
    model, _ = load_model(plan.method("gpemsr"), 8, {}, out, torch.device("cpu"), planned=planned)
    assert sum(p.numel() for p in model.parameters()) == meta["parameters"]
    # a new file is another model: infer refuses the old one
    other = Plan({**config, "pretrained_dir": str(tmp_path / "none")}).training_identity("gpemsr", 8)
    with pytest.raises(EmsrError, match="gpemsr_stage3_x8 content changed|not the gpemsr x8 model"):
        check_planned(out, meta["planned"], other, "gpemsr x8 model")


def test_install_refuses_a_file_of_the_other_scale(tmp_path):
    release, _ = paper_release(tmp_path, "stage3_x16")
    with pytest.raises(EmsrError) as err:
        install_stage3(
            release,
            tmp_path / "model.pt",
            method="gpemsr",
            scale=8,
            model_params={"preset": "paper", "variant": "full"},
            identity=None,
        )
    assert "\n" not in str(err.value) and str(release) in str(err.value)
    assert not (tmp_path / "model.pt").exists()


# ---------------------------------------------------------------- workflow


@pytest.mark.slow
def test_paper_released_config_plans_no_training_of_the_released_networks(tmp_path):
    stand_ins(tmp_path)
    # the config as shipped, with the opt-in for the files not downloadable here
    overlay = tmp_path / "allow-missing.yaml"
    overlay.write_text("pretrained: {allow_missing: true}\n")
    run = snakemake(tmp_path, [PAPER_RELEASED, overlay], "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    counts = rule_counts(run)
    assert not {"gpemsr_stage1", "gpemsr_stage2", "gpemsr_stage3", "gpemsr_stage1_evaluate", "train_segmenter"} & set(
        counts
    ), counts
    assert counts["gpemsr_released"] == 2
    methods = [p.name for p in (REPO / "methods").iterdir() if (p / "method.yaml").exists()]
    trained = [m for m in methods if m not in ("bicubic", "gpemsr")]
    assert counts["train"] == 2 * len(trained)
    assert counts["infer"] == counts["evaluate"] == 2 * len(methods)
    assert counts["segment"] == 2 * (len(methods) + 1) * 2  # both released networks, HR + every method, 2 scales
    assert counts["download_cremi"] == 3


@pytest.mark.slow
def test_released_files_are_required_and_fetch_weights_skips_them(tmp_path):
    config = config_file(tmp_path)
    stand_ins(tmp_path)
    (tmp_path / "weights" / RELEASE_DIR / "stage3_x16.pth").unlink()
    run = snakemake(tmp_path, config, "-n")
    assert run.returncode != 0
    said = emsr_lines(run)
    assert len(said) == 1 and "gpemsr runs on the study's released weights, but gpemsr_stage3_x16" in said[0], said
    assert "download stage3_x16.pth by hand from https://drive.google.com" in said[0]
    fetch = snakemake(tmp_path, config, "fetch_weights", "-n")
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    text = fetch.stdout + fetch.stderr
    assert "fetch_weights: skipped, to download by hand" in text and "stage3_x16.pth" in text
    assert "gpemsr-cremi" not in "".join(re.findall(r"output: (\S+)", text))  # never a download job


@pytest.mark.slow
def test_ablations_with_released_weights_say_so(tmp_path):
    stand_ins(tmp_path)
    run = snakemake(tmp_path, config_file(tmp_path, methods=["gpemsr"]), "ablations", "-n")
    assert run.returncode != 0
    assert (
        "ablations: 'gpemsr' runs preset 'released' (the study's released weights), which has no ablation variants"
        in run.stdout + run.stderr
    )


@pytest.mark.slow
def test_gpemsr_released_rule_installs_the_model(tmp_path):
    stand_ins(tmp_path)
    paper_release(tmp_path / "weights" / RELEASE_DIR, "stage3_x8")
    config = config_file(tmp_path, methods=["gpemsr"], scales=[8], segmentation={"enabled": False})
    target = "results-paper-released/models/gpemsr/x8/model.pt"
    run = snakemake(tmp_path, config, target)
    assert run.returncode == 0, run.stderr[-3000:]
    meta = torch.load(tmp_path / target, weights_only=True)
    assert RELEASED_FLAG in meta["flags"] and meta["gpemsr_stage"] == "released"
    assert (tmp_path / "results-paper-released/benchmarks/gpemsr_released/gpemsr-x8.tsv").exists()
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(tmp_path, config, target, "-n"))
    # a changed release file reinstalls the model (its sha256 is a param of the rule)
    (tmp_path / "weights" / RELEASE_DIR / "stage3_x8.pth").write_bytes(b"another file")
    assert rule_counts(snakemake(tmp_path, config, target, "-n", "--quiet", "rules")).get("gpemsr_released") == 1
