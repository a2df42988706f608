"""Method discovery and the method contract: every violation is a one-line EmsrError."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from emsrbench.errors import EmsrError
from emsrbench.methods import discover, load_method, select
from emsrbench.scaffold import new_method

ALL = discover()


def test_discovers_the_spine_methods():
    assert {"bicubic", "rcan"} <= set(ALL)
    assert ALL["rcan"].trains and not ALL["bicubic"].trains


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("scale", [8, 16])
def test_every_method_maps_lr_to_sr(name, scale):
    method = ALL[name]
    model = method.module().build(scale, **method.preset("quick")["model"])
    lr = torch.rand(2, method.slices, 7, 5)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (2, 1, 7 * scale, 5 * scale)
    assert torch.isfinite(sr).all()


def make_method(root, name="mine", meta=None, model="def build(scale):\n    return None\n"):
    folder = root / name
    folder.mkdir(parents=True)
    base = {
        "display_name": "Mine",
        "citation": "me",
        "family": "single-image",
        "scales": [8, 16],
        "trains": False,
        "presets": {"quick": {}, "paper": {}},
    }
    base.update(meta or {})
    (folder / "method.yaml").write_text(yaml.safe_dump(base))
    if model is not None:
        (folder / "model.py").write_text(model)
    return folder


def one_line_error(fn, *match):
    with pytest.raises(EmsrError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, msg
    return msg


def test_valid_folder_loads(tmp_path):
    m = load_method(make_method(tmp_path))
    assert m.name == "mine" and m.slices == 1 and m.scales == (8, 16)


def test_invalid_name(tmp_path):
    one_line_error(lambda: load_method(make_method(tmp_path, name="Bad.Name")), "Bad.Name", "invalid method name")


def test_missing_method_yaml(tmp_path):
    (tmp_path / "x").mkdir()
    one_line_error(lambda: load_method(tmp_path / "x"), "method.yaml", "missing")


def test_missing_model_py(tmp_path):
    one_line_error(lambda: load_method(make_method(tmp_path, model=None)), "model.py", "missing")


def test_unknown_key_is_rejected(tmp_path):
    one_line_error(lambda: load_method(make_method(tmp_path, meta={"scale": [8]})), "method.yaml", "scale")


def test_bad_yaml(tmp_path):
    folder = make_method(tmp_path)
    (folder / "method.yaml").write_text("display_name: [unclosed\n")
    one_line_error(lambda: load_method(folder), "method.yaml", "not valid YAML")


def test_bad_family_and_slices(tmp_path):
    one_line_error(lambda: load_method(make_method(tmp_path / "a", meta={"family": "video"})), "family")
    one_line_error(lambda: load_method(make_method(tmp_path / "b", meta={"family": "multi-slice", "slices": 4})), "odd")
    one_line_error(lambda: load_method(make_method(tmp_path / "c", meta={"slices": 3})), "single-image")


def test_missing_env_spec(tmp_path):
    one_line_error(lambda: load_method(make_method(tmp_path, meta={"env": "envs/nope.yaml"})), "envs/nope.yaml")


def test_model_without_build_and_broken_import(tmp_path):
    m = load_method(make_method(tmp_path / "a", model="x = 1\n"))
    one_line_error(m.module, "model.py", "build(scale")
    m = load_method(make_method(tmp_path / "b", model="import not_a_module_xyz\n"))
    one_line_error(m.module, "model.py", "import failed", "not_a_module_xyz")


def test_select_checks_names_presets_and_scales(tmp_path):
    make_method(tmp_path, meta={"scales": [8]})
    one_line_error(lambda: select(["nope"], "quick", [8], tmp_path), "unknown method", "nope", "mine")
    one_line_error(lambda: select(["mine"], "quick", [16], tmp_path), "mine", "16x")
    one_line_error(lambda: select("all", "fast", [8], tmp_path), "preset", "fast")
    assert list(select("all", "quick", [8], tmp_path)) == ["mine"]


def test_scaffold_writes_a_working_method_with_a_passing_test(tmp_path):
    folder = new_method("my-net", tmp_path)
    m = load_method(folder)
    assert m.trains and m.family == "single-image"
    test_file = folder / "test_method_my_net.py"
    assert test_file.exists()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
    one_line_error(lambda: new_method("my-net", tmp_path), "already exists")
    one_line_error(lambda: new_method("My Net", tmp_path), "invalid name")


def test_cli_new_method_and_listing(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "emsrbench.cli", "new-method", "cli_net", "--methods-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli_net" / "model.py").exists()
    run = subprocess.run([sys.executable, "-m", "emsrbench.cli", "methods"], capture_output=True, text=True)
    assert run.returncode == 0 and "rcan" in run.stdout and "bicubic" in run.stdout


def test_rcan_is_basicsr_rcan_with_one_grey_channel():
    rcan = ALL["rcan"].module().build(8, **ALL["rcan"].preset("quick")["model"])
    assert type(rcan).__module__ == "basicsr.archs.rcan_arch"
    assert rcan.conv_first.in_channels == 1 and rcan.conv_last.out_channels == 1
    assert rcan.mean.shape == (1, 1, 1, 1)
