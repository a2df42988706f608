"""GPEMSR architecture (src/emsrbench/gpemsr): parameter counts against the study's tables,
shapes at 8x and 16x, every ablation switch, and the building blocks against direct
computations (attention Eq. 1, deformable conv offsets, SPyNet against basicsr)."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from emsrbench.errors import EmsrError
from emsrbench.gpemsr import VARIANTS, VQGAN, Indexer, PatchDiscriminator, attach_pretrained, build, make_config
from emsrbench.gpemsr.mpf import MPF, patch_similarity
from emsrbench.gpemsr.params import PUBLISHED, format_table, table, unused_mpf_level
from emsrbench.gpemsr.pod import POD, ModulatedDeformConv
from emsrbench.gpemsr.tda import ConcatFusion, ThreeDA
from emsrbench.gpemsr.vqgan import SelfAttention
from emsrbench.pretrained import Pretrained

# ---------------------------------------------------------------- parameter counts (paper)


@pytest.fixture(scope="module")
def count_tables():
    return {scale: table(scale) for scale in (8, 16)}


def test_parameter_counts_match_supplement_tables(count_tables, capsys):
    with capsys.disabled():
        print("\nGPEMSR paper preset, parameters vs supplement Tables 3/4 (millions):\n" + format_table(count_tables))
    for scale, rows in count_tables.items():
        for r in rows:
            where = f"{scale}x {r.module}: ours {r.ours:.4f} M, published {r.published} M"
            if r.module == "Total":
                # within 0.25 % in the study's convention, 1 % counting every parameter
                assert abs(r.rel) < 0.0025 and abs(r.rel_all) < 0.02, where
            elif scale == 8 and r.module.startswith("MPF"):
                # Deliberate mismatch (-4.0 % / -46.6 %): the study's Table 3 counts a fourth
                # MPF level that its code builds at 8x but never runs; we do not build it.
                # Exactly that level's parameters separate the two numbers.
                assert r.ours < r.published, where
                assert r.ours + unused_mpf_level(8) / 1e6 == pytest.approx(r.published, abs=1e-4), where
            else:
                assert r.ours == pytest.approx(r.published, abs=1e-4), where  # exact at the published precision
                assert abs(r.rel_all) < 0.02, where  # and within 2 % counting GroupNorm and the codebook
    # The published 8x and 16x totals differ by exactly what our networks differ by, which is
    # what shows that the study's 8x network does not carry the unused MPF level.
    tot = {s: next(r for r in rows if r.module == "Total") for s, rows in count_tables.items()}
    assert tot[16].ours - tot[8].ours == pytest.approx(PUBLISHED[16]["Total"] - PUBLISHED[8]["Total"], abs=0.005)


def test_stage1_models_and_indexer_difference():
    """Stage I encoder/discriminator sizes (in no published number) and the 8x/16x indexer
    difference: a 256 -> 512 residual block instead of a stride-2 conv."""
    cfg = make_config("paper")
    with torch.device("meta"):
        vq, disc = VQGAN(cfg), PatchDiscriminator(cfg)
        i8, i16 = Indexer(cfg, 8), Indexer(cfg, 16)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(vq.encoder) == 18_691_136 and n(vq.quantizer) == 1024 * 512 and n(disc) == 2_761_793
    assert n(i16) - n(i8) == 2_493_440
    assert i8.downsamplings == 1 and i16.downsamplings == 0


# ---------------------------------------------------------------- shapes, quick preset


@pytest.mark.parametrize("scale", [8, 16])
def test_quick_forward_backward_shapes(scale, one_thread):
    torch.manual_seed(0)
    model = build(scale, "quick")
    x = torch.rand(2, 5, 8, 8)
    sr, prior = model.forward_with_prior(x)
    assert sr.shape == (2, 1, 8 * scale, 8 * scale)
    assert prior.shape == (2, 5, 1, 8 * scale, 8 * scale)
    assert torch.isfinite(sr).all()
    sr.mean().backward()
    # frozen: the VQGAN-Indexer prior, VGG, SPyNet; everything else gets a gradient
    assert all(p.grad is None for p in model.prior.parameters())
    assert all(p.grad is None for p in model.mpf.vgg.parameters())
    assert all(p.grad is None for p in model.pod.spynet.parameters())
    assert model.conv_first.weight.grad is not None and model.mpf.mask_net[0].weight.grad is not None
    assert model.pod.dcn[0].offset_conv.weight.grad is not None


def test_any_lr_size_is_padded_and_cropped(one_thread):
    model = build(8, "quick")
    assert model(torch.rand(1, 5, 9, 6)).shape == (1, 1, 72, 48)
    with pytest.raises(EmsrError, match="expects LR"):
        model(torch.rand(1, 3, 8, 8))


def test_quick_stage_timings(one_thread, capsys):
    """The quick preset's point: forward + backward of every stage on 5 sections of 8x8 LR
    at 8x in a fraction of a second (CPU time, one thread; generous bound for a loaded host)."""
    cfg = make_config("quick", scale=8)
    torch.manual_seed(0)
    hr, lr = torch.rand(5, 1, 64, 64), torch.rand(1, 5, 8, 8)
    vq, disc, idx, net = VQGAN(cfg), PatchDiscriminator(cfg), Indexer(cfg, 8), build(8, "quick")

    def stage1():
        rec, _, q = vq(hr)
        (F.l1_loss(rec, hr) + q - disc(rec).mean()).backward()

    def stage2():
        F.cross_entropy(idx(lr.view(5, 1, 8, 8)), torch.zeros(5, 4, 4, dtype=torch.long)).backward()

    def stage3():
        net(lr).mean().backward()

    times = {}
    for name, fn in (("I", stage1), ("II", stage2), ("III", stage3)):
        fn()  # warm-up
        t = time.process_time()
        fn()
        times[name] = time.process_time() - t
    with capsys.disabled():
        print("\nquick preset, forward+backward CPU seconds (1 thread):", {k: round(v, 3) for k, v in times.items()})
    assert max(times.values()) < 1.5, times


# ---------------------------------------------------------------- ablations


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_ablation_builds_and_runs(variant, one_thread):
    torch.manual_seed(0)
    model = build(8, "quick", variant)
    cfg = model.cfg
    assert hasattr(model, "prior") == cfg.mpf and hasattr(model, "pod") == cfg.pod
    assert isinstance(model.fusion, ThreeDA if cfg.tda else ConcatFusion)
    if cfg.mpf:
        assert hasattr(model.mpf, "vgg") == cfg.mpf_mask
        assert isinstance(model.prior.decoder.attention, SelfAttention) == cfg.decoder_attention
    vq = VQGAN(cfg)
    assert isinstance(vq.encoder.attention, SelfAttention) == cfg.encoder_attention
    assert isinstance(vq.decoder.attention, SelfAttention) == cfg.decoder_attention
    sr, prior = model.forward_with_prior(torch.rand(1, 5, 8, 8))
    assert sr.shape == (1, 1, 64, 64) and torch.isfinite(sr).all()
    assert (prior is None) == (not cfg.mpf)
    sr.mean().backward()
    rec, idx, _ = vq(torch.rand(2, 1, 32, 32))
    assert rec.shape == (2, 1, 32, 32) and idx.shape == (2, 2, 2)


def test_stage_keys_tell_which_ablations_share_stages_i_and_ii():
    from emsrbench.gpemsr.config import stage_key

    keys = {
        v: (stage_key(make_config("quick", v), "vqgan"), stage_key(make_config("quick", v), "indexer"))
        for v in VARIANTS
    }
    shared = {v for v, k in keys.items() if k == keys["full"]}
    assert shared == {"full", "mpf_no_mask", "no_pod", "no_3da", "no_mpf"}
    assert len({keys[v] for v in ("full", "no_enc_attn", "no_dec_attn")}) == 3
    assert stage_key(make_config("quick"), "vqgan") != stage_key(make_config("paper"), "vqgan")


def test_unknown_names_are_one_line_errors():
    with pytest.raises(EmsrError, match="unknown variant 'no_foo'"):
        make_config("quick", "no_foo")
    with pytest.raises(EmsrError, match="unknown model setting 'nff'"):
        make_config("quick", nff=3)
    with pytest.raises(EmsrError, match="power of two"):
        build(3, "quick")
    with pytest.raises(EmsrError, match="divisible by deform_groups"):
        make_config("quick", deform_groups=5)


# ---------------------------------------------------------------- blocks against direct computations


def test_self_attention_is_equation_1():
    """Atten(Q, K, V) = V softmax(K^T Q / sqrt(d_k)), then a conv, plus the input."""
    torch.manual_seed(0)
    att = SelfAttention(8, groups=4)
    x = torch.randn(2, 8, 3, 5)
    att.requires_grad_(False)
    y = att.norm(x)
    q, k, v = (conv(y).flatten(2) for conv in (att.q, att.k, att.v))  # (b, d, n)
    expected = torch.empty_like(q)
    for b in range(2):
        for j in range(q.shape[2]):  # each query position
            scores = torch.stack([k[b, :, i] @ q[b, :, j] for i in range(k.shape[2])]) / math.sqrt(8)
            expected[b, :, j] = v[b] @ torch.softmax(scores, 0)
    expected = x + att.proj(expected.view(2, 8, 3, 5))
    torch.testing.assert_close(att(x), expected, rtol=1e-5, atol=1e-5)


def test_deformable_conv_on_cpu_offsets_shift_the_sampling():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv(4, 6, deform_groups=2)
    x, feat = torch.randn(1, 4, 7, 9), torch.randn(1, 4, 7, 9)
    conv = lambda t: F.conv2d(t, dcn.weight, dcn.bias, padding=1)  # noqa: E731
    # zero-initialised offset conv: no offsets, masks sigmoid(0) = 0.5
    torch.testing.assert_close(dcn(x, feat), F.conv2d(x, dcn.weight * 0.5, dcn.bias, padding=1), rtol=1e-5, atol=1e-5)
    # offsets of +1 in x for every kernel tap and group, masks 1: the conv of x one pixel right
    n_off = 2 * 2 * 9
    with torch.no_grad():
        bias = torch.zeros(3 * 2 * 9)
        bias[:n_off] = torch.tensor([float(i % 2) for i in range(n_off)])
        bias[n_off:] = 30.0
        dcn.offset_conv.bias.copy_(bias)
    out = dcn(x, feat)
    # torchvision's offset layout per group and tap: (dy, dx); outside samples are zero like padding
    torch.testing.assert_close(out[..., :-1], conv(x)[..., 1:], rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert dcn.offset_conv.weight.grad.abs().sum() > 0


def test_pod_offsets_per_level_and_aligned_shape(one_thread):
    torch.manual_seed(0)
    cfg = make_config("quick", scale=8)
    pod = POD(cfg)
    n, nf, h, w = 3, cfg.nf, 8, 12
    feats = [torch.randn(n, nf, h >> l, w >> l) for l in range(3)]
    ref = [f.roll(1, 0) for f in feats]
    img_n, img_r = torch.rand(n, 1, h, w), torch.rand(n, 1, h, w)
    offsets = pod.offset_features(feats, ref, img_n, img_r)
    assert [tuple(o.shape) for o in offsets] == [(n, nf, h >> l, w >> l) for l in range(3)]
    # the per-level DCN offsets: 2 x deform_groups x 9 channels on each level's grid
    for lvl, o in enumerate(offsets):
        off, mask = pod.dcn[lvl].offsets_and_mask(o)
        assert off.shape == (n, 2 * cfg.deform_groups * 9, h >> lvl, w >> lvl)
        assert mask.shape == (n, cfg.deform_groups * 9, h >> lvl, w >> lvl)
    assert pod(feats, ref, img_n, img_r).shape == (n, nf, h, w)
    fl1, fl2 = pod.flow_pair(img_n, img_r)
    assert fl1 is fl2 and fl1.shape == (n, 2, h, w)  # "study": the same flow in both branches
    bi = POD(make_config("quick", scale=8, flows="bidirectional"))
    f1, f2 = bi.flow_pair(img_n, img_r)
    assert f1.shape == f2.shape == (n, 2, h, w) and not torch.equal(f1, f2)


def test_3da_masks_in_unit_interval_and_fused_shape():
    torch.manual_seed(0)
    tda = ThreeDA(nf=8, frames=5)
    aligned = torch.randn(2, 5, 8, 8, 12) * 3
    masks = tda.axial_masks(aligned)
    assert masks.shape == (2, 5, 1, 8, 12)
    assert masks.min() >= 0 and masks.max() <= 1
    assert tda(aligned).shape == (2, 8, 8, 12)


def test_mpf_mask_and_output():
    torch.manual_seed(0)
    cfg = make_config("quick", scale=8)
    dec_ch = (32, 16, 16, 8)
    mpf = MPF(cfg, 8, dec_ch)
    lr = torch.rand(2, 1, 8, 8)
    prior_feats = [torch.randn(2, c, 4 * 2**i, 4 * 2**i) for i, c in enumerate(dec_ch)]
    prior_img = torch.rand(2, 1, 64, 64)
    mask = mpf.mask(lr, prior_img)
    assert mask.shape == (2, 1, 4, 4) and mask.min() >= 0 and mask.max() <= 1
    assert mpf(torch.randn(2, cfg.nf, 8, 8), lr, prior_feats, prior_img).shape == (2, cfg.nf, 8, 8)
    # patch similarity: identical maps give 1, sign-flipped -1, per patch
    a = torch.randn(1, 3, 8, 12)
    torch.testing.assert_close(patch_similarity(a, a, 4), torch.ones(1, 1, 2, 3))
    torch.testing.assert_close(patch_similarity(a, -a, 4), -torch.ones(1, 1, 2, 3))
    assert patch_similarity(a, a, 5).shape == (1, 1, 2, 3)  # reflection-padded to whole patches


def test_missing_pretrained_parts_are_substituted_and_flagged(tmp_path):
    """Without its file the mask's VGG19 stays random and frozen (the study freezes it in stage
    III); SPyNet trains from scratch. Both are flagged; nothing counts as pretrained."""
    model = build(8, "quick")
    flags = attach_pretrained(model, Pretrained(tmp_path))
    assert len(flags) == 2 and "vgg19" in flags[0] and "spynet" in flags[1]
    assert "random and frozen" in flags[0] and "trained from scratch" in flags[1]
    assert not any(p.requires_grad for p in model.mpf.vgg.parameters())
    assert all(p.requires_grad for p in model.pod.spynet.parameters())
    assert model.pretrained_parts == set()
    assert not any(p.requires_grad for p in model.prior.parameters())
    assert attach_pretrained(build(8, "quick", "no_mpf"), Pretrained(tmp_path)) == [flags[1]]


def test_discriminator_min_size():
    cfg = make_config("quick")
    disc = PatchDiscriminator(cfg)
    s = disc.min_size()
    assert disc(torch.rand(1, 1, s, s)).shape[-1] == 1
    assert isinstance(disc.net[0], nn.Conv2d)


def test_self_attention_is_supplement_eq1_through_sdpa():
    """The attention block runs torch's scaled_dot_product_attention; it equals Eq. 1 written
    out with the whole (h*w)^2 weight matrix, V softmax_keys(K^T Q / sqrt(d_k)), to 1e-5."""
    import math

    from emsrbench.gpemsr.vqgan import SelfAttention

    torch.manual_seed(0)
    att = SelfAttention(32, groups=8).eval()
    x = torch.randn(2, 32, 6, 7)
    b, c, h, w = x.shape
    y = att.norm(x)
    q, k, v = (f(y).reshape(b, c, h * w) for f in (att.q, att.k, att.v))
    weights = torch.softmax(torch.bmm(k.transpose(1, 2), q) / math.sqrt(c), dim=1)  # (b, keys, queries)
    eq1 = x + att.proj(torch.bmm(v, weights).reshape(b, c, h, w))
    with torch.no_grad():
        assert torch.allclose(att(x), eq1, atol=1e-5)
