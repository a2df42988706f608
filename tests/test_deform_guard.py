"""The deformable-conv guard (issue #13): a NaN offset raises NonFiniteOffsets naming the module
instead of killing the process in torchvision's CPU kernel (SIGSEGV).  The forwards that would
crash run in a subprocess, so a regression fails the test instead of killing pytest."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from conftest import REPO

from emsrbench import deform_guard
from emsrbench.deform_guard import NonFiniteOffsets, check_offsets, guard_deformable_convs, offset_convs
from emsrbench.errors import EmsrError
from emsrbench.methods import discover

SEGFAULT = -11  # subprocess return code of a process killed by SIGSEGV


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


# A network whose offset conv at ``where`` overflowed, as a diverged weight does: a NaN bias
# makes its first offset channel NaN at every pixel.  Prints the error the forward raised;
# "bare": the network's guards removed.
NAN_OFFSETS = """
    import sys
    import numpy as np
    import torch
    from emsrbench.deform_guard import NonFiniteOffsets, offset_convs
    from emsrbench.gpemsr import build as build_gpemsr
    from emsrbench.infer import InferSettings, TiledUpscaler, neighbour_indices
    from emsrbench.methods import discover

    torch.set_num_threads(1)
    torch.manual_seed(0)
    name, where, guarded = sys.argv[1], sys.argv[2], sys.argv[3] == "guarded"
    if name == "gpemsr":
        model = build_gpemsr(8, "quick")
    else:
        edvr = discover()["edvr"]
        model = edvr.module().build(8, **edvr.preset("quick")["model"])
    conv = model.get_submodule(where)
    if not guarded:
        for offset_conv in offset_convs(model).values():
            offset_conv._forward_hooks.clear()
    with torch.no_grad():
        conv.bias[0] = float("nan")
    model.eval()
    volume = np.random.default_rng(0).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    windows = np.stack([neighbour_indices(z, 5, 5) for z in range(5)])
    settings = InferSettings.merged({"tile": 16, "overlap": 4, "margin": 1})
    try:
        TiledUpscaler(model, 8, settings, torch.device("cpu")).sections(volume, windows)
    except NonFiniteOffsets as err:
        print(f"raised: {err}")
"""


@pytest.mark.parametrize(
    "name, where, message",
    [
        ("gpemsr", "pod.dcn.1.offset_conv", "gpemsr pod.dcn.1"),
        ("edvr", "pcd_align.dcn_pack.l1.conv_offset", "edvr pcd_align.dcn_pack.l1"),
    ],
)
def test_nan_offsets_raise_a_one_line_error_naming_the_module_instead_of_crashing(name, where, message):
    """Tiled inference (GPEMSR: the feature-reuse path) with NaN offsets in one deformable conv
    raises; without the guard the same run dies of SIGSEGV in torchvision's CPU kernel."""
    guarded = run_python(NAN_OFFSETS, name, where, "guarded")
    assert guarded.returncode == 0, f"exit {guarded.returncode} (-11: SIGSEGV); stderr: {guarded.stderr[-2000:]}"
    assert re.fullmatch(  # one line, naming the module
        rf"raised: {message} \(deformable conv\): offsets hold [1-9]\d* NaN and 0 Inf of \d+ values - .*\n",
        guarded.stdout,
    ), guarded.stdout
    # The negative control: torchvision 0.29.1's kernel does crash (if this fails, torchvision
    # fixed its CPU kernel and the guard is a check for clarity only).
    bare = run_python(NAN_OFFSETS, name, where, "bare")
    assert bare.returncode == SEGFAULT, (bare.returncode, bare.stdout, bare.stderr[-500:])


def dcnv2_output(offset_fill=0.0, mask_fill=0.0) -> torch.Tensor:
    """An offset conv output (1, 3 G K, 4, 4), G = 2, K = 9: 36 offset then 18 mask channels."""
    out = torch.zeros(1, 54, 4, 4)
    out[0, 0, 1, 1] = offset_fill
    out[0, 40, 2, 2] = mask_fill
    return out


def test_check_names_what_is_not_finite():
    check_offsets(dcnv2_output(), "m")  # finite: no error
    check_offsets(dcnv2_output(mask_fill=float("inf")), "m")  # sigmoid(inf) = 1: a finite mask
    with pytest.raises(NonFiniteOffsets, match=r"^m \(deformable conv\): offsets hold 0 NaN and 1 Inf of 576 values"):
        check_offsets(dcnv2_output(offset_fill=float("inf")), "m")
    with pytest.raises(NonFiniteOffsets, match=r"^m \(deformable conv\): mask holds 1 NaN of 288 values - "):
        check_offsets(dcnv2_output(mask_fill=float("nan")), "m")
    with pytest.raises(NonFiniteOffsets, match=r"offsets hold 1 NaN and 0 Inf of 576 values; mask holds 1 NaN"):
        check_offsets(dcnv2_output(float("nan"), float("nan")), "m")
    assert issubclass(NonFiniteOffsets, EmsrError)  # infer_file adds the output file and sections
    check_offsets(torch.empty(1, 54, 4, 4, device="meta"), "m")  # no values on meta: shape-only counting


def test_every_deformable_conv_call_of_every_method_is_guarded(monkeypatch, one_thread):
    """Each method's quick network: one guard check per torchvision deform_conv2d call in a
    forward (both GPEMSR's and basicsr's modules look the function up at call time), so a
    deformable conv added without the guard fails here."""
    calls = {"deform_conv2d": 0, "check": 0}
    deform_conv2d, check = torchvision.ops.deform_conv2d, deform_guard.check_offsets

    def counting_deform(*args, **kwargs):
        calls["deform_conv2d"] += 1
        return deform_conv2d(*args, **kwargs)

    def counting_check(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", counting_deform)
    monkeypatch.setattr(deform_guard, "check_offsets", counting_check)
    deformable = []
    for name, method in sorted(discover().items()):
        torch.manual_seed(0)
        model = method.module().build(8, **method.preset("quick")["model"]).eval()
        calls.update(deform_conv2d=0, check=0)
        with torch.no_grad():
            model(torch.rand(1, method.slices, 8, 8))
        assert calls["check"] == calls["deform_conv2d"], (name, calls)
        if calls["deform_conv2d"]:
            deformable.append(name)
    assert deformable == ["edvr", "gpemsr"]  # the test covers both deformable networks


def test_guards_name_the_modules_state_dict_path_and_are_added_once():
    gpemsr = discover()["gpemsr"].module().build(8, "quick")
    guard_deformable_convs(gpemsr.pod, "again")  # POD guarded itself at construction
    for name, conv in offset_convs(gpemsr).items():
        hooks = list(conv._forward_hooks.values())
        assert len(hooks) == 1 and hooks[0].where == f"gpemsr {name}"
    assert sorted(offset_convs(gpemsr)) == ["pod.dcn.0", "pod.dcn.1", "pod.dcn.2", "pod.refine_dcn"]
    # torchvision's DeformConv2d takes its offsets as an argument: no offset conv to guard (the
    # test above would catch a method calling it unguarded)
    assert offset_convs(torchvision.ops.DeformConv2d(2, 2, 3)) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernel_turns_nan_offsets_into_nan_output_without_a_check():
    """Why the guard skips CUDA (no device sync): there the kernel reads in bounds for a NaN
    offset and gives NaN, which the harness's output check reports."""
    result = run_python(
        """
        import torch, torchvision
        from emsrbench.deform_guard import check_offsets
        x = torch.rand(2, 4, 16, 16, device="cuda")
        offset = torch.zeros(2, 18, 16, 16, device="cuda")
        offset[0, 1, 5, 5] = float("nan")
        check_offsets(torch.cat([offset, torch.zeros(2, 9, 16, 16, device="cuda")], 1), "m")  # skipped
        out = torchvision.ops.deform_conv2d(x, offset, torch.rand(4, 4, 3, 3, device="cuda"), padding=1)
        print(int(torch.isnan(out).sum()) > 0, bool(torch.isfinite(out[1]).all()))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]
