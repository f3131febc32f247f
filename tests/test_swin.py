"""Swin specifics: parity with mmdet's SwinTransformer (its own key layout and
the official one), the checkpoint converter, bias-table resizing,
pretrained loading and parameter counts."""
import pytest
import torch

from mmvisbackbones import Swin, convert_swin_checkpoint
from mmvisbackbones.backbones.swin import (detect_swin_layout,
                                           resize_relative_position_bias_table,
                                           shifted_window_mask)

# a small arch with two blocks per stage, so every stage has a shifted block
PARITY_ARCH = dict(depths=(2, 2, 2, 2), dims=16, num_heads=(1, 2, 2, 4))
SIZES = [(64, 64), (65, 97), (224, 160), (33, 47)]


def official_state_dict(depths, dims, heads, window=7, img_size=224, num_classes=1000,
                        device='cpu', seed=0):
    """A microsoft/Swin-Transformer classification state dict, keys and
    shapes written out by hand (random values): patch_embed.{proj,norm},
    layers.i.blocks.j.*, the buffers upstream saves (relative_position_index
    everywhere, attn_mask in shifted blocks whose map is larger than the
    window), layers.i.downsample at the end of layers 0..2, norm, head."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, one=False):
        if device == 'meta':
            return torch.empty(shape, device='meta')
        x = torch.randn(shape, generator=g) * 0.2
        return x + 1 if one else x

    C = [dims * 2**i for i in range(len(depths))]
    N = window * window
    sd = {'patch_embed.proj.weight': t(C[0], 3, 4, 4), 'patch_embed.proj.bias': t(C[0]),
          'patch_embed.norm.weight': t(C[0], one=True), 'patch_embed.norm.bias': t(C[0])}
    for i, depth in enumerate(depths):
        c, res = C[i], img_size // 4 // 2**i
        for j in range(depth):
            b = f'layers.{i}.blocks.{j}.'
            sd.update({
                b + 'norm1.weight': t(c, one=True), b + 'norm1.bias': t(c),
                b + 'attn.relative_position_bias_table': t((2 * window - 1)**2, heads[i]),
                b + 'attn.relative_position_index': torch.zeros(N, N, dtype=torch.long,
                                                                device=device),
                b + 'attn.qkv.weight': t(3 * c, c), b + 'attn.qkv.bias': t(3 * c),
                b + 'attn.proj.weight': t(c, c), b + 'attn.proj.bias': t(c),
                b + 'norm2.weight': t(c, one=True), b + 'norm2.bias': t(c),
                b + 'mlp.fc1.weight': t(4 * c, c), b + 'mlp.fc1.bias': t(4 * c),
                b + 'mlp.fc2.weight': t(c, 4 * c), b + 'mlp.fc2.bias': t(c)})
            if j % 2 and res > window:
                sd[b + 'attn_mask'] = t((res // window)**2, N, N)
        if i < len(depths) - 1:
            d = f'layers.{i}.downsample.'
            sd.update({d + 'reduction.weight': t(2 * c, 4 * c),
                       d + 'norm.weight': t(4 * c, one=True), d + 'norm.bias': t(4 * c)})
    sd.update({'norm.weight': t(C[-1], one=True), 'norm.bias': t(C[-1]),
               'head.weight': t(num_classes, C[-1]), 'head.bias': t(num_classes)})
    return sd


def output_norms(dims, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(n):
        c = dims * 2**i
        sd[f'norm{i}.weight'] = 1 + 0.2 * torch.randn(c, generator=g)
        sd[f'norm{i}.bias'] = 0.2 * torch.randn(c, generator=g)
    return sd


def mmdet_swin(arch=PARITY_ARCH, window=7):
    from mmdet.models.backbones import SwinTransformer
    return SwinTransformer(embed_dims=arch['dims'], depths=arch['depths'],
                           num_heads=arch['num_heads'], window_size=window,
                           drop_path_rate=0.0, out_indices=(0, 1, 2, 3))


def perturb(model, seed=0):
    """Random weights everywhere (biases, norms and bias tables not trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(noise + 1 if 'norm' in name and name.endswith('weight') else noise)
    return model


def strip_backbone(sd):
    assert all(k.startswith('backbone.') for k in sd)
    return {k[len('backbone.'):]: v for k, v in sd.items()}


def compare(ours, ref, sizes=SIZES):
    """Max abs difference of the four outputs over ``sizes``."""
    worst = 0.0
    ours.eval()
    ref.eval()
    for H, W in sizes:
        x = torch.randn(2, 3, H, W)
        with torch.no_grad():
            a, b = ours(x), ref(x)
        assert len(a) == len(b) == 4
        for o, r in zip(a, b):
            assert o.shape == r.shape, (H, W, o.shape, r.shape)
            # fp32 summation order differs between CPUs' kernels (1.2e-5 seen
            # on an AMD EPYC host at window 4); the float64 checks in the
            # tests prove the algorithms equal to rounding
            torch.testing.assert_close(o, r, rtol=1e-4, atol=3e-5)
            worst = max(worst, (o - r).abs().max().item())
    return worst


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize('window', [7, 4])
def test_parity_with_mmdet_swin_mmdet_layout(window):
    """mmdet's SwinTransformer state dict -> converter -> strict load -> same
    four outputs (odd and non-square sizes included)."""
    torch.manual_seed(0)
    ref = perturb(mmdet_swin(window=window))
    sd = convert_swin_checkpoint(ref.state_dict())
    ours = Swin(arch=dict(PARITY_ARCH, window_size=window), drop_path_rate=0.0)
    ours.load_state_dict(sd, strict=True)
    worst = compare(ours, ref)
    print(f'mmdet layout, window {window}: max |diff| {worst:.2e}')
    # in float64 the two agree to rounding: same algorithm, not just close
    x = torch.randn(1, 3, 65, 97, dtype=torch.float64)
    with torch.no_grad():
        for o, r in zip(ours.double()(x), ref.double()(x)):
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)


def test_parity_with_mmdet_swin_official_layout():
    """An official-layout state dict goes into mmdet's model through mmdet's own
    swin_converter and into ours through convert_swin_checkpoint: same outputs."""
    from mmdet.models.backbones.swin import swin_converter
    d = PARITY_ARCH
    official = official_state_dict(d['depths'], d['dims'], d['num_heads'])
    official.update(output_norms(d['dims']))  # as a detector checkpoint would carry
    ref = mmdet_swin()
    # the fixture's relative_position_index buffers are zeros (our converter
    # must drop them); mmdet keeps its own (persistent) buffers instead
    mm = {k: v for k, v in strip_backbone(swin_converter(official)).items()
          if not k.endswith('relative_position_index')}
    missing, unexpected = ref.load_state_dict(mm, strict=False)
    assert missing and all(k.endswith('relative_position_index') for k in missing), missing
    assert set(unexpected) == {'norm.weight', 'norm.bias'} | {
        k.replace('layers', 'stages', 1) for k in official if k.endswith('attn_mask')}, unexpected
    ours = Swin(arch=PARITY_ARCH, drop_path_rate=0.0)
    ours.load_state_dict(convert_swin_checkpoint(official), strict=True)
    worst = compare(ours, ref)
    print(f'official layout: max |diff| {worst:.2e}')


def test_parity_through_init_cfg_with_window_resize(tmp_path):
    """A window-7 mmdet detector checkpoint loaded into window-12 models: our
    resized bias tables and features equal mmdet's own loading path."""
    src = perturb(mmdet_swin(window=7))
    ckpt = tmp_path / 'det.pth'
    # without mmdet's persistent relative_position_index buffers: mmdet itself
    # cannot load them into a model of another window (a size-mismatch error)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()
                               if not k.endswith('relative_position_index')},
                'meta': {'epoch': 12}}, ckpt)
    from mmdet.models.backbones import SwinTransformer
    from mmengine.config import ConfigDict
    ref = SwinTransformer(embed_dims=16, depths=PARITY_ARCH['depths'],
                          num_heads=PARITY_ARCH['num_heads'], window_size=12,
                          drop_path_rate=0.0,
                          init_cfg=ConfigDict(type='Pretrained', checkpoint=str(ckpt)))
    ref.init_weights()
    ours = Swin(arch=PARITY_ARCH, window_size=12, drop_path_rate=0.0,
                init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    ours.init_weights()
    key = 'stages.2.blocks.1.attn.relative_position_bias_table'
    assert ours.state_dict()[key].shape == (23 * 23, 2)
    torch.testing.assert_close(ours.state_dict()[key],
                               ref.state_dict()[key.replace('attn.', 'attn.w_msa.')])
    compare(ours, ref, sizes=[(65, 97), (96, 128)])


def test_shifted_window_mask_regions():
    """Every window of the shifted map: tokens may attend only within their
    own sub-window (same region label), -100 elsewhere; unshifted interior
    windows are all zeros."""
    m = shifted_window_mask(14, 21, 7, 3)
    assert m.shape == (2 * 3, 49, 49)
    assert torch.equal(m[0], torch.zeros(49, 49))  # top-left window: one region
    last = m[-1]  # bottom-right window: four regions of 4x4, 4x3, 3x4, 3x3 tokens
    counts = sorted(int((row == 0).sum()) for row in last[[0, 6, 42, 48]])
    assert counts == [9, 12, 12, 16]
    assert set(last.unique().tolist()) == {0.0, -100.0}


# -------------------------------------------------------------- converter
@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'base_384'])
def test_converter_maps_every_official_key(arch):
    a = Swin.arch_zoo[arch]
    with torch.device('meta'):
        net = Swin(arch=arch)
    own = net.state_dict()
    official = official_state_dict(a['depths'], a['dims'], a['num_heads'], a['window_size'],
                                   img_size=384 if arch == 'base_384' else 224, device='meta')
    assert any(k.endswith('attn_mask') for k in official)
    assert detect_swin_layout(official) == 'official'
    converted = convert_swin_checkpoint(official, net)
    assert not any(k.startswith(('head', 'layers')) or k.endswith(('attn_mask', '_index'))
                   for k in converted)
    own_no_outnorm = {k for k in own if not k.startswith('norm')}
    assert set(converted) == own_no_outnorm
    for k, v in converted.items():
        assert v.shape == own[k].shape, k
    # our own keys pass through unchanged
    assert set(convert_swin_checkpoint({k: torch.empty(0) for k in own})) == set(own)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_converter_maps_every_mmdet_key(arch):
    """mmdet/mmseg key layout, as mmdet's own swin_converter writes it from
    an official checkpoint (its naming matches mmdet's model: see the
    official-layout parity test), plus the output norms of a detector."""
    from mmdet.models.backbones.swin import swin_converter
    a = Swin.arch_zoo[arch]
    with torch.device('meta'):
        net = Swin(arch=arch)
    official = official_state_dict(a['depths'], a['dims'], a['num_heads'], device='meta')
    sd = strip_backbone(swin_converter(official))
    sd.update({f'norm{i}.{p}': torch.empty(a['dims'] * 2**i, device='meta')
               for i in range(4) for p in ('weight', 'bias')})
    assert detect_swin_layout(sd) == 'mmdet'
    converted = convert_swin_checkpoint(sd, net)
    own = net.state_dict()
    assert set(converted) == set(own)
    for k, v in converted.items():
        assert v.shape == own[k].shape, k


def test_converter_timm_layout():
    """timm keeps patch merging at the start of layers 1..3 (upstream's
    channel order) and names the classifier head.fc."""
    sd = official_state_dict((1, 1, 2, 1), 16, (1, 1, 2, 2), device='meta')
    timm = {}
    for k, v in sd.items():
        if '.downsample.' in k:
            i = int(k.split('.')[1])
            k = k.replace(f'layers.{i}.', f'layers.{i + 1}.', 1)
        timm[k.replace('head.', 'head.fc.')] = v
    assert detect_swin_layout(timm) == 'timm'
    assert set(convert_swin_checkpoint(timm)) == set(convert_swin_checkpoint(sd))


def test_mmdet_unfold_permutation_round_trip():
    """Our mmdet -> official permutation inverts mmdet's own official -> mmdet."""
    from mmdet.models.backbones.swin import swin_converter
    sd = official_state_dict((1, 1, 1, 1), 8, (1, 1, 1, 1))
    back = convert_swin_checkpoint(strip_backbone(swin_converter(sd)))
    ours = convert_swin_checkpoint(sd)
    assert set(back) == set(ours)
    for k in ours:
        assert torch.equal(back[k], ours[k]), k
    # and the permutation is not the identity (the test would be blind otherwise)
    mm = strip_backbone(swin_converter(sd))
    assert not torch.equal(mm['stages.0.downsample.reduction.weight'],
                           sd['layers.0.downsample.reduction.weight'])


def test_mixed_layout_is_an_error():
    with pytest.raises(ValueError, match='mixes the official'):
        convert_swin_checkpoint({'layers.0.blocks.0.norm1.weight': torch.zeros(1),
                                 'stages.0.blocks.0.attn.w_msa.qkv.weight': torch.zeros(1)})


# ------------------------------------------------------- bias-table resize
def test_bias_table_resize_shapes_and_properties():
    table = torch.randn(13 * 13, 3)
    out = resize_relative_position_bias_table(table, 12)
    assert out.shape == (23 * 23, 3)
    # resizing to the same window is the identity
    assert torch.equal(resize_relative_position_bias_table(table, 7), table)
    # heads are resized independently and a constant table stays constant
    const = torch.tensor([0.5, -1.0, 2.0]).expand(13 * 13, 3).contiguous()
    torch.testing.assert_close(resize_relative_position_bias_table(const, 12),
                               torch.tensor([0.5, -1.0, 2.0]).expand(23 * 23, 3))
    # the centre (zero offset) of a smooth table keeps its value
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 13), torch.linspace(-1, 1, 13),
                            indexing='ij')
    smooth = (1 - 0.3 * (yy**2 + xx**2)).reshape(-1, 1)
    big = resize_relative_position_bias_table(smooth, 12).reshape(23, 23)
    assert abs(big[11, 11].item() - 1.0) < 1e-3
    with pytest.raises(ValueError, match='square'):
        resize_relative_position_bias_table(torch.zeros(10, 2), 7)


def test_converter_resizes_only_with_the_model():
    sd = official_state_dict((1, 1, 2, 1), 16, (1, 1, 2, 2), window=7)
    key = 'stages.2.blocks.1.attn.relative_position_bias_table'
    assert convert_swin_checkpoint(sd)[key].shape == (169, 2)  # pure, no model
    net = Swin(arch='test', window_size=12)
    converted = convert_swin_checkpoint(sd, net)
    assert converted[key].shape == (529, 2)
    net.load_state_dict({k: v for k, v in converted.items()}, strict=False)


# ------------------------------------------------------------ loading
def test_loads_official_checkpoint_under_model_key(tmp_path):
    d = PARITY_ARCH
    official = official_state_dict(d['depths'], d['dims'], d['num_heads'])
    ckpt = tmp_path / 'swin_cls.pth'
    torch.save({'model': official, 'epoch': 299}, ckpt)
    net = Swin(arch=PARITY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    expected = convert_swin_checkpoint(official)
    own = net.state_dict()
    for k, v in expected.items():
        assert torch.equal(own[k], v), k


def test_loads_mmdet_detector_checkpoint(tmp_path):
    """A whole mmdet detector (backbone. prefix, neck keys) of mmdet's Swin."""
    src = perturb(mmdet_swin())
    sd = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 1}}, ckpt)
    net = Swin(arch=PARITY_ARCH, drop_path_rate=0.0,
               init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    compare(net, src, sizes=[(64, 80)])


# ---------------------------------------------------------------- arch
@pytest.mark.parametrize('arch,upstream_m', [('tiny', 28), ('small', 50), ('base', 88),
                                             ('base_384', 88)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """Upstream reports 28M / 50M / 88M for the classification models
    (backbone + final norm + 1000-class head)."""
    with torch.device('meta'):
        net = Swin(arch=arch, out_indices=(3, ))
    c = net.num_features[-1]
    n = sum(p.numel() for p in net.parameters()) + (c * 1000 + 1000)  # head; norm3 = cls norm
    assert round(n / 1e6) == upstream_m, n
    assert Swin.classification_params(arch) == n  # what the README table shows


def test_arch_options():
    with torch.device('meta'):
        net = Swin(arch='base_384')
        assert net.window_size == 12 and net.out_channels == [128, 256, 512, 1024]
        assert Swin(arch='tiny', window_size=12).window_size == 12
    custom = Swin(arch=dict(depths=(1, 1, 1, 1), dims=8, num_heads=(1, 1, 2, 2)))
    assert custom.window_size == 7 and custom.out_channels == [8, 16, 32, 64]
    with pytest.raises(ValueError, match='same length'):
        Swin(arch=dict(depths=(1, 1, 1), dims=8, num_heads=(1, 1, 2, 2)))
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        Swin(arch=dict(depths=(1, 1, 1, 1), dims=8, num_heads=(3, 1, 2, 2)))
    with pytest.raises(ValueError, match='lacks keys'):
        Swin(arch=dict(depths=(1, 1, 1, 1), dims=8))
