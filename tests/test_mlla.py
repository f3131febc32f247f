"""MLLA specifics: upstream parity (classification model and dense backbone at
an odd, non-square size), the checkpoint converter, RoPE at any resolution,
parameter counts."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmvisbackbones import MLLA, build_backbone, convert_mlla_checkpoint
from mmvisbackbones.backbones.mlla import LinearAttention, apply_rope, rope_tables
from mmvisbackbones.utils import CheckpointMismatchError

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'mlla_upstream_test_arch.pth')
# tools/dev/make_mlla_parity_fixture.py's upstream model
FIXTURE_ARCH = dict(embed_dims=4, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), mlp_ratio=2.0,
                    qkv_bias=True, drop_path_rate=0.0)


def load_fixture():
    fx = torch.load(FIXTURE, weights_only=True)

    def f32(d):  # weights were rounded to fp16 before upstream's fp32 forward
        return {k: (v.float() if v.is_floating_point() else v) for k, v in d.items()}

    fx['model'], fx['det_norms'] = f32(fx['model']), f32(fx['det_norms'])
    fx['cls_input'], fx['det_input'] = fx['cls_input'].float(), fx['det_input'].float()
    return fx


def stage_outputs(net, x):
    """Our per-stage outputs before the output norms, NCHW."""
    x = net.patch_embed(x)
    outs = []
    for stage in net.stages:
        x = stage(x)
        outs.append(x.permute(0, 3, 1, 2))
    return outs


def upstream_keys(depths, embed_dims=64, head=True, dense=False):
    """Key names of an upstream LeapLabTHU/MLLA checkpoint, written out by hand:
    the classification ``MLLA`` (head, final norm) or, with ``dense``, the
    mmdet/mmseg backbone (``norm0..3``).  Both hold the RoPE ``rotations``
    buffers."""
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    keys = ['patch_embed.conv1.conv.weight'] + [f'patch_embed.conv1.norm.{p}' for p in bn]
    for c in ('conv2.0', 'conv2.1', 'conv3.0', 'conv3.1'):
        keys += [f'patch_embed.{c}.conv.weight'] + [f'patch_embed.{c}.norm.{p}' for p in bn]
    wb = ('weight', 'bias')
    for i, depth in enumerate(depths):
        for j in range(depth):
            b = f'layers.{i}.blocks.{j}.'
            for m in ('cpe1', 'norm1', 'in_proj', 'act_proj', 'dwc', 'attn.qk', 'attn.lepe',
                      'out_proj', 'cpe2', 'norm2', 'mlp.fc1', 'mlp.fc2'):
                keys += [f'{b}{m}.{p}' for p in wb]
            keys.append(b + 'attn.rope.rotations')
        if i < len(depths) - 1:
            d = f'layers.{i}.downsample.conv.'
            keys += [f'{d}{k}.conv.{p}' for k in (0, 1, 2) for p in wb]
            keys += [f'{d}2.norm.{p}' for p in bn]
    if head:
        keys += ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']
    if dense:
        keys += [f'norm{i}.{p}' for i in range(4) for p in wb]
    return keys


def test_upstream_parity_classification_checkpoint(tmp_path):
    """Upstream's classification MLLA at its one resolution (64x64): the
    output of each stage's last block.  Loaded as released, under 'model'
    with head, final norm and RoPE buffers, through init_cfg."""
    fx = load_fixture()
    ckpt = tmp_path / 'mlla_cls.pth'
    torch.save({'model': fx['model'], 'epoch': 299, 'max_accuracy': 10.0}, ckpt)
    net = MLLA(arch=FIXTURE_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        outs = stage_outputs(net.eval(), fx['cls_input'])
    assert len(outs) == len(fx['cls_features']) == 4
    for ours, ref in zip(outs, fx['cls_features']):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_converter_is_complete_on_the_fixture():
    fx = load_fixture()
    net = MLLA(arch=FIXTURE_ARCH)
    sd = convert_mlla_checkpoint(fx['model'])
    sd.update(fx['det_norms'])
    net.load_state_dict(sd, strict=True)  # every key maps, none left over


def test_upstream_parity_dense_backbone_odd_size(tmp_path):
    """Upstream's mmdet backbone (per-size RoPE, stem padding to a multiple of 4,
    patch-merging padding to even) at 45x71 through its norm0..3, loaded from
    an mmdet-style checkpoint (``backbone.`` prefix, neck keys beside it)."""
    fx = load_fixture()
    dense = {k: v for k, v in fx['model'].items() if not k.startswith(('head.', 'norm.'))}
    dense.update(fx['det_norms'])
    sd = {f'backbone.{k}': v for k, v in dense.items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    ckpt = tmp_path / 'mlla_det.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 12}}, ckpt)
    net = MLLA(arch=FIXTURE_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        outs = net.eval()(fx['det_input'])
    assert [tuple(o.shape[-2:]) for o in outs] == [(12, 18), (6, 9), (3, 5), (2, 3)]
    for ours, ref in zip(outs, fx['det_features']):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_converter_maps_every_upstream_key(arch):
    a = MLLA.arch_zoo[arch]
    with torch.device('meta'):
        net = MLLA(arch=arch)
    own = set(net.state_dict())
    cls_keys = upstream_keys(a['depths'])
    converted = convert_mlla_checkpoint({k: torch.empty(0) for k in cls_keys})
    assert not any(k.startswith(('head.', 'norm.')) or 'rope' in k for k in converted)
    assert set(converted) == {k for k in own if not k.startswith('norm')}
    dense = upstream_keys(a['depths'], head=False, dense=True)
    assert set(convert_mlla_checkpoint({k: torch.empty(0) for k in dense})) == own
    # upstream's layers.i.downsample ends stage i; ours starts stage i + 1
    assert 'stages.1.downsample.conv.2.norm.running_var' in converted
    assert not any(k.startswith('stages.0.downsample') for k in converted)
    # our own keys pass through unchanged, and the input is not modified
    ours = {k: torch.empty(0) for k in own}
    assert convert_mlla_checkpoint(dict(ours)).keys() == ours.keys()
    src = {k: torch.empty(0) for k in cls_keys}
    convert_mlla_checkpoint(src)
    assert set(src) == set(cls_keys)


def test_wrong_arch_checkpoint_is_reported_not_loaded(tmp_path):
    """An MLLA-T-shaped layout into the test arch: every tensor mismatches."""
    src = build_backbone('mlla_test').state_dict()
    sd = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in src.items()
          if v.is_floating_point()}
    ckpt = tmp_path / 'other.pth'
    torch.save({'model': sd}, ckpt)
    net = build_backbone('mlla_test', init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    with pytest.raises(CheckpointMismatchError):
        net.init_weights()


def _upstream_rope(x):
    """Upstream's classification ``RoPE`` (complex rotation), built fresh for
    x's (h, w, c)."""
    h, w, c = x.shape[-3:]
    k_max = c // 4
    theta = 1 / (10000**(torch.arange(k_max) / k_max))
    angles = torch.cat([t.unsqueeze(-1) * theta for t in torch.meshgrid(
        torch.arange(h), torch.arange(w), indexing='ij')], dim=-1)
    rot = torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rot * torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))) \
        .flatten(-2)


def _upstream_attention(attn, x):
    """Upstream's LinearAttention.forward on x (B, H, W, C), written out again."""
    b, h, w, c = x.shape
    n, nh = h * w, attn.num_heads
    q, k = (F.elu(attn.qk(x)) + 1.0).chunk(2, dim=-1)
    qr, kr = _upstream_rope(q), _upstream_rope(k)

    def heads(t):
        return t.reshape(b, n, nh, c // nh).permute(0, 2, 1, 3)

    qr, kr, q, k, v = map(heads, (qr, kr, q, k, x))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (kr.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
    out = (qr @ kv * z).transpose(1, 2).reshape(b, h, w, c)
    lepe = attn.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return out + lepe


def test_rope_any_resolution_equals_a_fresh_computation():
    torch.manual_seed(0)
    attn = LinearAttention(16, num_heads=2).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    # sizes in an order that would expose a stale cache entry
    for hw in [(7, 11), (12, 5), (7, 11), (1, 3)]:
        x = torch.randn(2, *hw, 16)
        torch.testing.assert_close(apply_rope(x), _upstream_rope(x), rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(attn(x), _upstream_attention(attn, x), rtol=1e-5,
                                       atol=1e-5)
    cos, sin = rope_tables(7, 11, 16)
    assert cos.shape == sin.shape == (7, 11, 8) and cos.dtype == torch.float32


def test_rope_table_made_in_inference_mode_serves_training():
    with torch.inference_mode():
        rope_tables(13, 9, 32)  # first use inside inference mode fills the cache
    x = torch.randn(1, 13, 9, 32, requires_grad=True)
    apply_rope(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_whole_model_at_odd_non_square_size_matches_per_size_attention():
    """The backbone at 37x53 (RoPE tables the model never saw at build time)
    and again after another size: identical outputs, no stale tables."""
    net = build_backbone('mlla_test').eval()
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        a = net(x)
        net(torch.randn(1, 3, 64, 32))
        b = net(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_bad_widths_are_clear_errors():
    bad = dict(FIXTURE_ARCH, embed_dims=6)
    with pytest.raises(ValueError, match='divisible by 4'):
        MLLA(arch=bad)
    with pytest.raises(ValueError, match='heads'):
        MLLA(arch=dict(FIXTURE_ARCH, num_heads=(3, 1, 2, 2)))


# upstream's own models/mlla.py, counted with
# `tools/dev/make_mlla_parity_fixture.py --mlla-repo ... --count-params`
UPSTREAM_CODE_PARAMS = {'tiny': 24_392_200, 'small': 43_015_048, 'base': 95_983_960}


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_parameter_counts_match_upstream(arch):
    """Backbone + final norm (our norm3) + 1000-class head equals upstream's
    classification model parameter for parameter.  Its README reports 25M /
    43M / 96M; S and B round to those, T (24.39M) is listed as 25M there."""
    with torch.device('meta'):
        net = MLLA(arch=arch, out_indices=(3, ))
    c = net.num_features[-1]
    n = sum(p.numel() for p in net.parameters()) + c * 1000 + 1000
    assert n == UPSTREAM_CODE_PARAMS[arch]
    assert MLLA.classification_params(arch) == n  # what the README table shows
    published = float(MLLA.upstream_params[arch].rstrip('M'))
    if arch == 'tiny':
        assert abs(n / 1e6 - published) < 0.65
    else:
        assert round(n / 1e6) == published
