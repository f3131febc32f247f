"""PVTv2 specifics: parity with mmdet's PyramidVisionTransformerV2 and with the
official whai362/PVT layout, the checkpoint converter, pretrained loading,
parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmvisbackbones import PVTv2, build_backbone, convert_pvtv2_checkpoint
from mmvisbackbones.utils import CheckpointMismatchError

SIZES = [(64, 64), (65, 97), (224, 160)]
#: a small model in both implementations: mmdet derives stage dims as
#: embed_dims * num_heads[i], so dims 16/32/48/64 with heads 1/2/3/4
SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(2, 1, 2, 1), num_heads=(1, 2, 3, 4),
             mlp_ratios=(2, 2, 4, 2), sr_ratios=(8, 4, 2, 1), linear=False, drop_path_rate=0.0)
SMALL_LI = dict(SMALL, linear=True)


# --------------------------------------------------------------- helpers
def official_keys(arch, with_head=True):
    """Key names of an official whai362/PVT v2 classification checkpoint
    (classification/pvt_v2.py: PyramidVisionTransformerV2), written out by hand."""
    a = PVTv2.arch_zoo[arch] if isinstance(arch, str) else arch
    wb = ('weight', 'bias')
    keys = []
    for i in range(4):
        s = i + 1
        keys += [f'patch_embed{s}.{m}.{p}' for m in ('proj', 'norm') for p in wb]
        for j in range(a['depths'][i]):
            b = f'block{s}.{j}.'
            mods = ['norm1', 'attn.q', 'attn.kv', 'attn.proj', 'norm2', 'mlp.fc1',
                    'mlp.dwconv.dwconv', 'mlp.fc2']
            if a['linear'] or a['sr_ratios'][i] > 1:  # linear: pooled path in every stage
                mods += ['attn.sr', 'attn.norm']
            keys += [b + m + '.' + p for m in mods for p in wb]
        keys += [f'norm{s}.{p}' for p in wb]
    if with_head:
        keys += ['head.weight', 'head.bias']
    return keys


def to_official(sd, num_classes=10):
    """Our state dict -> the official layout (hand-written inverse mapping),
    with a classification head as the released checkpoints have."""
    out = {}
    for k, v in sd.items():
        parts = k.split('.')
        if parts[0] == 'patch_embed':
            new = 'patch_embed1.' + '.'.join(parts[1:])
        elif parts[0] == 'stages' and parts[2] == 'downsample':
            new = f'patch_embed{int(parts[1]) + 1}.' + '.'.join(parts[3:])
        elif parts[0] == 'stages' and parts[2] == 'norm':
            new = f'norm{int(parts[1]) + 1}.' + parts[3]
        elif parts[0] == 'stages' and parts[2] == 'blocks':
            rest = '.'.join(parts[4:]).replace('mlp.dwconv.', 'mlp.dwconv.dwconv.')
            new = f'block{int(parts[1]) + 1}.{parts[3]}.{rest}'
        else:
            raise AssertionError(f'unexpected key {k}')
        out[new] = v.clone()
    c = sd['stages.3.norm.weight'].shape[0]
    out['head.weight'] = torch.randn(num_classes, c)
    out['head.bias'] = torch.randn(num_classes)
    return out


def reference_forward(sd, x, arch):
    """Upstream's forward_features (detection/pvt_v2.py) restated with
    functional ops on an official-layout state dict: explicit softmax(q k^T *
    scale) attention, upstream's LayerNorm eps (1e-5 patch embed and sr norm,
    1e-6 blocks and stage norms).  Independent of our module structure."""
    outs = []
    for i in range(4):
        s = i + 1
        pe = f'patch_embed{s}.'
        k, st = (7, 4) if i == 0 else (3, 2)
        x = F.conv2d(x, sd[pe + 'proj.weight'], sd[pe + 'proj.bias'], stride=st, padding=k // 2)
        B, C, H, W = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (C, ), sd[pe + 'norm.weight'],
                         sd[pe + 'norm.bias'], 1e-5)
        heads, d = arch['num_heads'][i], C // arch['num_heads'][i]
        for j in range(arch['depths'][i]):
            b = f'block{s}.{j}.'
            h = F.layer_norm(t, (C, ), sd[b + 'norm1.weight'], sd[b + 'norm1.bias'], 1e-6)
            q = F.linear(h, sd[b + 'attn.q.weight'], sd[b + 'attn.q.bias'])
            q = q.reshape(B, -1, heads, d).permute(0, 2, 1, 3)
            if arch['linear'] or arch['sr_ratios'][i] > 1:
                m = h.permute(0, 2, 1).reshape(B, C, H, W)
                if arch['linear']:
                    m = F.conv2d(F.adaptive_avg_pool2d(m, 7), sd[b + 'attn.sr.weight'],
                                 sd[b + 'attn.sr.bias'])
                else:
                    r = arch['sr_ratios'][i]
                    m = F.conv2d(m, sd[b + 'attn.sr.weight'], sd[b + 'attn.sr.bias'], stride=r)
                m = F.layer_norm(m.reshape(B, C, -1).permute(0, 2, 1), (C, ),
                                 sd[b + 'attn.norm.weight'], sd[b + 'attn.norm.bias'], 1e-5)
                if arch['linear']:
                    m = F.gelu(m)
            else:
                m = h
            kv = F.linear(m, sd[b + 'attn.kv.weight'], sd[b + 'attn.kv.bias'])
            kv = kv.reshape(B, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
            attn = ((q @ kv[0].transpose(-2, -1)) * d**-0.5).softmax(dim=-1)
            o = (attn @ kv[1]).transpose(1, 2).reshape(B, -1, C)
            t = t + F.linear(o, sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'])
            h = F.layer_norm(t, (C, ), sd[b + 'norm2.weight'], sd[b + 'norm2.bias'], 1e-6)
            h = F.linear(h, sd[b + 'mlp.fc1.weight'], sd[b + 'mlp.fc1.bias'])
            if arch['linear']:
                h = F.relu(h)
            hid = h.shape[-1]
            h = F.conv2d(h.transpose(1, 2).reshape(B, hid, H, W),
                         sd[b + 'mlp.dwconv.dwconv.weight'], sd[b + 'mlp.dwconv.dwconv.bias'],
                         padding=1, groups=hid)
            h = F.gelu(h.flatten(2).transpose(1, 2))
            t = t + F.linear(h, sd[b + 'mlp.fc2.weight'], sd[b + 'mlp.fc2.bias'])
        t = F.layer_norm(t, (C, ), sd[f'norm{s}.weight'], sd[f'norm{s}.bias'], 1e-6)
        x = t.reshape(B, H, W, C).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


@torch.no_grad()
def perturb(model, scale=0.05):
    """Move every parameter off its init (norm weights away from 1, biases
    from 0) so that a wrong mapping cannot hide behind symmetric values."""
    for p in model.parameters():
        p.add_(torch.randn_like(p) * scale)
    return model


def ours(arch=SMALL, **kw):
    return perturb(PVTv2(arch=dict(arch), **kw)).eval()


def build_mmdet(arch=SMALL):
    """mmdet's own PyramidVisionTransformerV2 with ``arch``'s shape, drop path 0.

    mmdet uses LayerNorm eps 1e-6 everywhere; upstream (and ours) use
    PyTorch's default 1e-5 in the patch-embed and spatial-reduction norms.
    Those two eps are set to upstream's here so that the comparison tests the
    rest of the numerics; nothing else is touched.
    """
    pytest.importorskip('mmdet')
    from mmdet.models.backbones import PyramidVisionTransformerV2 as MMPVTv2
    dims = arch['embed_dims']
    base = dims[0] // arch['num_heads'][0]
    assert [base * h for h in arch['num_heads']] == list(dims)
    mm = MMPVTv2(embed_dims=base, num_layers=list(arch['depths']),
                 num_heads=list(arch['num_heads']), mlp_ratios=list(arch['mlp_ratios']),
                 sr_ratios=list(arch['sr_ratios']), qkv_bias=True, drop_path_rate=0.0)
    mm.init_weights()
    for layer in mm.layers:
        layer[0].norm.eps = 1e-5
        for blk in layer[1]:
            if hasattr(blk.attn, 'norm'):
                blk.attn.norm.eps = 1e-5
    return mm


def assert_features_equal(a, b, atol=1e-5):
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-5, atol=atol)


# ------------------------------------------------- parity with mmdet / upstream
def test_parity_with_mmdet_pvtv2():
    """mmdet's PyramidVisionTransformerV2 (perturbed weights) -> converter ->
    strict load into PVTv2 -> same 4 feature maps at odd and non-square sizes."""
    torch.manual_seed(1)
    mm = perturb(build_mmdet()).eval()
    net = PVTv2(arch=dict(SMALL)).eval()
    converted = convert_pvtv2_checkpoint(mm.state_dict())
    net.load_state_dict(converted, strict=True)  # every key maps, none left over
    worst = 0.0
    for H, W in SIZES:
        x = torch.randn(2, 3, H, W)
        with torch.no_grad():
            ref, got = mm(x), net(x)
        for r, g, s in zip(ref, got, net.out_strides):
            assert g.shape[2:] == (math.ceil(H / s), math.ceil(W / s))
            assert r.abs().mean() > 1e-2  # not a degenerate comparison
        assert_features_equal(got, ref)
        worst = max(worst, max((g - r).abs().max().item() for g, r in zip(got, ref)))
    print(f'max |ours - mmdet| = {worst:.2e}')


def test_official_layout_through_mmdet_pvt_convert_and_ours():
    """An official-layout checkpoint, loaded into mmdet's model by mmdet's own
    pvt_convert and into ours by convert_pvtv2_checkpoint, gives the same
    features; the functional restatement of upstream's forward agrees."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.pvt import pvt_convert
    torch.manual_seed(2)
    official = to_official(ours().state_dict())
    assert set(official) == set(official_keys(SMALL))
    mm = build_mmdet().eval()
    mm.load_state_dict(pvt_convert(official), strict=True)
    net = PVTv2(arch=dict(SMALL)).eval()
    net.load_state_dict(convert_pvtv2_checkpoint(official), strict=True)
    for H, W in SIZES:
        x = torch.randn(1, 3, H, W)
        with torch.no_grad():
            got, ref_mm = net(x), mm(x)
            ref = reference_forward(official, x, SMALL)
        assert_features_equal(got, ref_mm)
        assert_features_equal(got, ref)


@pytest.mark.parametrize('size', [(32, 45)] + SIZES)
def test_linear_variant_matches_upstream_forward(size):
    """b2_li-style linear SRA (pool 7x7 + 1x1 conv + LN + GELU, ReLU in the
    FFN).  mmdet has no linear PVTv2, so the reference is upstream's forward
    restated functionally on the official-layout weights.  (32, 45) has
    stage maps smaller than the 7x7 pool."""
    torch.manual_seed(3)
    src = ours(SMALL_LI)
    official = to_official(src.state_dict())
    assert set(official) == set(official_keys(SMALL_LI))
    net = PVTv2(arch=dict(SMALL_LI)).eval()
    net.load_state_dict(convert_pvtv2_checkpoint(official), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert_features_equal(net(x), reference_forward(official, x, SMALL_LI))


def test_mmdet_layout_of_linear_variant_converts():
    """An official b2_li checkpoint run through mmdet's pvt_convert (its keys
    keep attn.sr / attn.norm in every stage) converts back to ours."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.pvt import pvt_convert
    src = ours(SMALL_LI)
    mm_layout = pvt_convert(to_official(src.state_dict()))
    back = convert_pvtv2_checkpoint(mm_layout)
    assert set(back) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(back[k], v), k


# ------------------------------------------------------------- converter
@pytest.mark.parametrize('arch', ['b0', 'b1', 'b2', 'b2_li', 'b3', 'b4', 'b5'])
def test_converter_maps_every_official_key(arch):
    with torch.device('meta'):
        net = PVTv2(arch=arch)
    own = net.state_dict()
    converted = convert_pvtv2_checkpoint({k: torch.empty(0) for k in official_keys(arch)})
    assert set(converted) == set(own)  # head dropped, nothing unmapped, nothing missing
    # our own keys pass through unchanged
    assert set(convert_pvtv2_checkpoint({k: torch.empty(0) for k in own})) == set(own)


@pytest.mark.parametrize('arch', ['b0', 'b2_li'])
def test_official_round_trip_is_exact(arch):
    src = build_backbone(f'pvtv2_{arch}')
    back = convert_pvtv2_checkpoint(to_official(src.state_dict()))
    assert set(back) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(back[k], v), k


def test_converter_is_pure():
    sd = to_official(ours().state_dict())
    before = {k: v.clone() for k, v in sd.items()}
    convert_pvtv2_checkpoint(sd)
    assert set(sd) == set(before) and all(torch.equal(sd[k], before[k]) for k in sd)


def test_pvt_v1_checkpoint_is_refused():
    with pytest.raises(ValueError, match='PVT \\(v1\\).*pos_embed1'):
        convert_pvtv2_checkpoint({'pos_embed1': torch.zeros(1, 3136, 64),
                                  'patch_embed1.proj.weight': torch.zeros(64, 3, 4, 4)})


# ---------------------------------------------------- loading through init_cfg
def _save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize('container', ['state_dict', 'model', 'bare', 'detector'])
def test_loads_official_checkpoints_through_init_cfg(tmp_path, container):
    """Official weights as released (classification: bare keys or under
    'model'/'state_dict') and as whai362's mmdet 2.x detectors save them
    (official keys under 'backbone.', plus neck/head keys)."""
    src = build_backbone('pvtv2_test')
    off = to_official(src.state_dict())
    if container == 'bare':
        obj = off
    elif container == 'detector':
        obj = {'state_dict': {**{f'backbone.{k}': v for k, v in off.items()},
                              'neck.lateral_convs.0.conv.weight': torch.zeros(1)},
               'meta': {'epoch': 12}}
    else:
        obj = {container: off, 'epoch': 300}
    ckpt = _save(tmp_path, f'{container}.pth', obj)
    dst = build_backbone('pvtv2_test', init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_loads_mmdet3_detector_checkpoint(tmp_path):
    """A checkpoint of a detector with mmdet's own PyramidVisionTransformerV2."""
    mm = perturb(build_mmdet())
    sd = {f'backbone.{k}': v for k, v in mm.state_dict().items()}
    sd['rpn_head.rpn_conv.weight'] = torch.zeros(1)
    ckpt = _save(tmp_path, 'mmdet3.pth', {'state_dict': sd, 'meta': {}})
    net = PVTv2(arch=dict(SMALL), init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    net.init_weights()
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        assert_features_equal(net.eval()(x), mm.eval()(x))


def test_builds_and_loads_from_a_config_without_pretrained_key(tmp_path):
    """whai362's mmdet 2.x backbones read kwargs['pretrained'] and raise
    KeyError when a config gives only init_cfg; ours builds from the mmdet
    registry with init_cfg alone and loads the official weights."""
    pytest.importorskip('mmdet')
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    src = build_backbone('pvtv2_test')
    ckpt = _save(tmp_path, 'pvt_v2_test.pth', {'model': to_official(src.state_dict())})
    net = MODELS.build(dict(type='PVTv2', arch='test',
                            init_cfg=dict(type='Pretrained', checkpoint=ckpt)))
    assert type(net) is PVTv2
    net.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    # mmdet's own class keeps its name: ours is never shadowed and never shadows it
    assert type(MODELS.build(dict(type='PyramidVisionTransformerV2', embed_dims=16,
                                  num_layers=[1, 1, 1, 1]))).__module__.startswith('mmdet')


def test_checkpoint_of_another_arch_is_a_clear_error(tmp_path):
    """Official weights of a wider model: every shape differs, nothing loads."""
    wide = dict(SMALL, embed_dims=tuple(2 * d for d in SMALL['embed_dims']))
    ckpt = _save(tmp_path, 'pvt_v2_wide.pth', to_official(PVTv2(arch=wide).state_dict()))
    net = build_backbone('pvtv2_test', init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    with pytest.raises(CheckpointMismatchError, match='pvt_v2_wide.pth.*stages'):
        net.init_weights()


# ------------------------------------------------------------ architecture
@pytest.mark.parametrize('arch,upstream_m', [
    ('b0', 3.7), ('b1', 14.0), ('b2', 25.4), ('b2_li', 22.6), ('b3', 45.2), ('b4', 62.6),
    ('b5', 82.0)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """whai362/PVT classification/README.md: #Params of the ImageNet models
    (backbone + stage norms + 1000-class head)."""
    with torch.device('meta'):
        net = PVTv2(arch=arch)
    c = net.num_features[-1]
    n = sum(p.numel() for p in net.parameters()) + (c * 1000 + 1000)
    assert round(n / 1e6, 1) == upstream_m, n
    assert PVTv2.classification_params(arch) == n  # what the README table shows
    assert PVTv2.upstream_params[arch] == f'{upstream_m}M'


def test_arch_table_as_upstream():
    z = PVTv2.arch_zoo
    assert z['b0']['embed_dims'] == (32, 64, 160, 256)
    for a in ('b1', 'b2', 'b2_li', 'b3', 'b4', 'b5'):
        assert z[a]['embed_dims'] == (64, 128, 320, 512)
        assert z[a]['num_heads'] == (1, 2, 5, 8) and z[a]['sr_ratios'] == (8, 4, 2, 1)
    assert {a: z[a]['depths'] for a in z if a != 'test'} == {
        'b0': (2, 2, 2, 2), 'b1': (2, 2, 2, 2), 'b2': (3, 4, 6, 3), 'b2_li': (3, 4, 6, 3),
        'b3': (3, 4, 18, 3), 'b4': (3, 8, 27, 3), 'b5': (3, 6, 40, 3)}
    assert z['b5']['mlp_ratios'] == (4, 4, 4, 4) and z['b2']['mlp_ratios'] == (8, 8, 4, 4)
    assert [a for a in z if z[a]['linear']] == ['b2_li']


def test_stage_norm_is_the_output_norm_and_freezes_with_its_stage():
    net = PVTv2(arch='test', frozen_stages=1)
    frozen = net.frozen_modules()
    assert net.patch_embed in frozen and net.stages[0] in frozen
    assert not net.stages[0].norm.weight.requires_grad  # output 0's norm, frozen with stage 0
    assert net.stages[1].downsample.proj.weight.requires_grad  # stage 1's patch embed is not
    # output i is stage i's map after its norm, which also feeds stage i + 1
    net.eval()
    x = torch.randn(1, 3, 64, 80)
    seen = {}
    net.stages[0].norm.register_forward_hook(lambda m, i, o: seen.setdefault('n0', o))
    with torch.no_grad():
        outs = net(x)
    torch.testing.assert_close(outs[0], seen['n0'].reshape(1, 16, 20, 16).permute(0, 3, 1, 2))
    with torch.no_grad():
        torch.testing.assert_close(net.stages[1](outs[0]), outs[1])


def test_out_indices_subset_matches_full_model():
    full = PVTv2(arch='test').eval()
    part = PVTv2(arch='test', out_indices=(0, 2)).eval()
    part.load_state_dict(full.state_dict())
    x = torch.randn(1, 3, 48, 72)
    with torch.no_grad():
        a, b = full(x), part(x)
    assert len(b) == 2
    torch.testing.assert_close(b[0], a[0])
    torch.testing.assert_close(b[1], a[2])


def test_drop_path_rates_as_upstream():
    net = PVTv2(arch='b2')
    rates = [blk.drop_path.drop_prob for st in net.stages for blk in st.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 16))
    net = PVTv2(arch='test', drop_path_rate=0.3)
    assert net.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.3)


def test_bad_arch_dict_is_a_clear_error():
    with pytest.raises(ValueError, match='num_heads has 3 entries for 4 stages'):
        PVTv2(arch=dict(SMALL, num_heads=(1, 2, 4)))
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        PVTv2(arch=dict(SMALL, num_heads=(1, 2, 5, 4)))
