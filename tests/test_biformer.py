"""BiFormer specifics: upstream parity through the converter, the converter's
key handling, the memory-light routed attention against the straightforward
gather, parameter counts."""
import os.path as osp

import pytest
import torch

from mmvisbackbones import BiFormer, build_backbone, convert_biformer_checkpoint
from mmvisbackbones.backbones.biformer import BiLevelRoutingAttention
from mmvisbackbones.utils import CheckpointMismatchError
from mmvisbackbones.utils.checkpoint import load_pretrained

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'biformer_upstream_test_arch.pth')
#: the fixture's upstream model (tools/dev/make_biformer_parity_fixture.py)
FIXTURE_ARCH = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), topks=(1, 3, 9, -2), head_dim=4,
                    mlp_ratio=2.0, n_win=3, side_dwconv=5, layer_scale_init_value=-1,
                    drop_path_rate=0.0)


def upstream_keys(depths, topks, layout='cls'):
    """Key names of an upstream rayleizhu/BiFormer checkpoint, written out by
    hand: ``'cls'`` = models/biformer.py's ``BiFormer`` (released
    biformer_*_in1k.pth, under ``model``), ``'mm'`` = the mmdet/mmseg
    ``BiFormer_mm`` backbone (no ``norm``/``head``, plus ``extra_norms``)."""
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    wb = ('weight', 'bias')
    keys = [f'downsample_layers.0.{i}.{p}' for i in (0, 3) for p in wb]
    keys += [f'downsample_layers.0.{i}.{p}' for i in (1, 4) for p in bn]
    for i in (1, 2, 3):
        keys += [f'downsample_layers.{i}.0.{p}' for p in wb]
        keys += [f'downsample_layers.{i}.1.{p}' for p in bn]
    for i, (depth, topk) in enumerate(zip(depths, topks)):
        for j in range(depth):
            b = f'stages.{i}.{j}.'
            mods = ['pos_embed', 'norm1', 'norm2', 'mlp.0', 'mlp.3', 'attn.lepe']
            mods += ['attn.qkv.qkv', 'attn.wo'] if topk > 0 else ['attn.proj']
            keys += [f'{b}{m}.{p}' for m in mods for p in wb]
            if topk == -2:
                keys.append(b + 'attn.qkv.weight')  # AttentionLePE: qkv without bias
    if layout == 'cls':
        keys += [f'norm.{p}' for p in bn] + ['head.weight', 'head.bias']
    else:
        keys += [f'extra_norms.{i}.{p}' for i in range(4) for p in wb]
    return keys


def fixture_mm_state_dict(fx):
    sd = {k: v for k, v in fx['cls_state_dict'].items() if not k.startswith(('norm.', 'head.'))}
    sd.update(fx['extra_norms'])
    return sd


# ------------------------------------------------------------------ parity
def test_upstream_parity_mm_checkpoint_through_init_cfg(tmp_path):
    """Upstream BiFormer_mm's features (fixture made by upstream's own model),
    loaded as a whole-detector checkpoint (``backbone.`` prefix) through init_cfg."""
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'biformer_mm.pth'
    sd = fixture_mm_state_dict(fx)
    torch.save({'state_dict': {'backbone.' + k: v for k, v in sd.items()},
                'meta': {}}, ckpt)
    net = BiFormer(arch=FIXTURE_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        feats = net.eval()(fx['input'])
    assert len(feats) == len(fx['features']) == 4
    for ours, ref in zip(feats, fx['features']):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('routed_impl,chunk', [('chunked', 1), ('chunked', 4), ('gather', 4)])
def test_upstream_parity_every_key_maps(routed_impl, chunk):
    fx = torch.load(FIXTURE, weights_only=True)
    net = BiFormer(arch=FIXTURE_ARCH, routed_impl=routed_impl, routed_chunk=chunk).eval()
    net.load_state_dict(convert_biformer_checkpoint(fixture_mm_state_dict(fx)), strict=True)
    with torch.no_grad():
        feats = net(fx['input'])
    for ours, ref in zip(feats, fx['features']):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_upstream_classification_checkpoint(tmp_path):
    """The released classification layout (under ``model``, BN ``norm`` and
    ``head`` dropped): everything but our output norms loads."""
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'biformer_cls.pth'
    torch.save({'model': fx['cls_state_dict'], 'epoch': 3}, ckpt)
    net = BiFormer(arch=FIXTURE_ARCH)
    report = load_pretrained(net, str(ckpt), converter=BiFormer.convert_checkpoint)
    assert sorted(report['missing']) == sorted(f'norm{i}.{p}' for i in range(4)
                                               for p in ('weight', 'bias'))
    assert not report['unexpected'] and not report['mismatched']
    # with upstream's extra_norms (the mm backbone's) the features are upstream's
    net.load_state_dict(convert_biformer_checkpoint(fx['extra_norms']), strict=False)
    with torch.no_grad():
        feats = net.eval()(fx['input'])
    for ours, ref in zip(feats, fx['features']):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------- converter
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_converter_maps_every_official_key(arch):
    with torch.device('meta'):
        net = BiFormer(arch=arch)
    ours = set(net.state_dict())
    depths, topks = net.arch['depths'], net.arch['topks']
    out_norms = {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    cls = convert_biformer_checkpoint(dict.fromkeys(upstream_keys(depths, topks, 'cls')))
    assert set(cls) == ours - out_norms  # head and final BN dropped, the rest all ours
    mm = convert_biformer_checkpoint(dict.fromkeys(upstream_keys(depths, topks, 'mm')))
    assert set(mm) == ours
    assert convert_biformer_checkpoint(dict.fromkeys(ours)).keys() == ours  # ours pass through


def test_converter_examples():
    out = convert_biformer_checkpoint({
        'downsample_layers.0.4.running_var': 1, 'downsample_layers.2.0.weight': 2,
        'stages.2.5.attn.qkv.qkv.bias': 3, 'stages.2.5.attn.wo.weight': 4,
        'stages.3.1.attn.qkv.weight': 5, 'stages.0.0.mlp.3.bias': 6, 'extra_norms.3.bias': 7,
        'head.weight': 8, 'norm.running_mean': 9, 'norm2.weight': 10})
    assert out == {'patch_embed.norm2.running_var': 1, 'stages.2.downsample.conv.weight': 2,
                   'stages.2.blocks.5.attn.qkv.bias': 3, 'stages.2.blocks.5.attn.proj.weight': 4,
                   'stages.3.blocks.1.attn.qkv.weight': 5, 'stages.0.blocks.0.mlp.fc2.bias': 6,
                   'norm3.bias': 7, 'norm2.weight': 10}


def test_checkpoint_that_matches_nothing_raises(tmp_path):
    ckpt = tmp_path / 'other.pth'
    torch.save({'model': {'layers.0.blocks.0.op.A_logs': torch.zeros(3)}}, ckpt)
    net = BiFormer(arch='test', init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    with pytest.raises(CheckpointMismatchError, match='no parameter of checkpoint'):
        net.init_weights()


# ---------------------------------------------------------- parameter count
@pytest.mark.parametrize('arch,upstream_m', [('tiny', 13.1), ('small', 25.5), ('base', 56.8)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """BiFormer README: T 13.1M, S 25.5M, B 56.8M (classification model).
    Ours without the output norms, plus upstream's final BatchNorm and
    1000-class head."""
    with torch.device('meta'):
        net = BiFormer(arch=arch)
    assert BiFormer.upstream_params[arch] == f'{upstream_m}M'
    trunk = sum(p.numel() for n, p in net.named_parameters() if not n.startswith('norm'))
    C = net.num_features[-1]
    total = trunk + 2 * C + C * 1000 + 1000
    assert abs(total / 1e6 - upstream_m) < 0.05, total
    assert BiFormer.classification_params(arch) == total  # what the README table shows


@pytest.mark.parametrize('arch,upstream_g', [('tiny', 2.2), ('small', 4.5), ('base', 9.8)])
def test_flops_match_upstream(arch, upstream_g):
    """BiFormer README: T 2.2G, S 4.5G, B 9.8G FLOPs at 224x224 with the
    classification n_win 7 (the head's 0.5M MACs are below the rounding)."""
    from mmvisbackbones.utils import count_flops
    with torch.device('meta'):
        net = BiFormer(arch=arch, n_win=7)
    g = count_flops(net, (1, 3, 224, 224))['total'] / 1e9
    assert abs(g - upstream_g) < 0.05, g


@pytest.mark.parametrize('topk', [1, 4, 9])
def test_bra_module_chunked_equals_gather(topk):
    """The whole BRA (padding to a multiple of n_win, routing, LePE, crop) with
    the chunked path equals the gather path, outputs and parameter gradients."""
    torch.manual_seed(0)
    a = BiLevelRoutingAttention(24, 3, n_win=3, topk=topk, routed_impl='chunked', routed_chunk=2)
    b = BiLevelRoutingAttention(24, 3, n_win=3, topk=topk, routed_impl='gather')
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 13, 10, 24)  # padded to 15 x 12
    ya, yb = a(x), b(x)
    assert ya.shape == x.shape
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_bad_topk_and_routed_impl():
    with pytest.raises(ValueError,
                       match=r'topk=17 routed regions must lie in \[1, n_win\*\*2 = 16\]'):
        BiFormer(arch=dict(BiFormer.arch_zoo['test'], topks=(1, 2, 17, -2)), n_win=4)
    with pytest.raises(ValueError, match='topk=0 is not supported'):
        BiFormer(arch=dict(BiFormer.arch_zoo['test'], topks=(0, 2, 4, -2)))
    with pytest.raises(ValueError, match='routed_impl'):
        BiFormer(arch='test', routed_impl='cuda')


def test_detection_n_win_and_gather_backbone_agree():
    """Real arch layout at the detection setting (n_win 16) on a small odd
    input: the chunked and the gather backbones give the same features."""
    arch = dict(BiFormer.arch_zoo['tiny'], depths=(1, 1, 1, 1))
    torch.manual_seed(0)
    a = BiFormer(arch=arch, routed_impl='chunked').eval()
    b = BiFormer(arch=arch, routed_impl='gather').eval()
    b.load_state_dict(a.state_dict())
    assert a.n_win == 16
    x = torch.randn(1, 3, 97, 65)
    with torch.no_grad():
        for fa, fb in zip(a(x), b(x)):
            torch.testing.assert_close(fa, fb, rtol=1e-4, atol=1e-4)


def test_plain_builder_names():
    net = build_backbone('biformer_test', out_indices=(3, ))
    assert net.out_channels == [64] and net.n_win == 2
