"""Checkpoint variant detection: each family's ``detect_<family>_variant``
reads the upstream variant and size from a checkpoint's keys and shapes, and
``load_pretrained`` refuses a checkpoint of another variant or size than the
model's arch, naming both, before anything is loaded.

The upstream state dicts are written out here from the upstream projects' key
names and shape rules (MzeroMiko/VMamba ``classification/models/vmamba.py``,
hustvl/Vim ``vim/models_mamba.py``, microsoft/Swin-Transformer, whai362/PVT
``pvt_v2.py``), on the meta device (shapes only) where the size is real and
with real tensors where something is loaded.
"""
import math
import os.path as osp

import pytest
import torch

from mmvisbackbones import MLLA, PVTv2, BiFormer, Swin, Vim, VisionRWKV, VMamba
from mmvisbackbones.backbones.biformer import detect_biformer_variant
from mmvisbackbones.backbones.mlla import detect_mlla_variant
from mmvisbackbones.backbones.pvtv2 import detect_pvtv2_variant
from mmvisbackbones.backbones.swin import detect_swin_variant
from mmvisbackbones.backbones.vim import detect_vim_variant
from mmvisbackbones.backbones.vision_rwkv import detect_vision_rwkv_variant
from mmvisbackbones.backbones.vmamba import detect_vmamba_variant
from mmvisbackbones.utils.checkpoint import (CheckpointMismatchError, CheckpointVariantError,
                                             check_checkpoint_variant, load_pretrained)

DATA = osp.join(osp.dirname(__file__), 'data')
META = torch.device('meta')


def tensor(device):
    """A maker of tensors of a shape: empty on the meta device, random else."""
    if device == META:
        return lambda *shape: torch.empty(*shape, device=META)
    return lambda *shape: torch.randn(*shape)


def save(tmp_path, sd, name='ckpt.pth', container='model'):
    path = tmp_path / name
    torch.save({container: sd} if container else sd, path)
    return str(path)


def load(model, path, **kw):
    return load_pretrained(model, path, converter=type(model).convert_checkpoint, **kw)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ VMamba
def vmamba_upstream(depths, dims, ssm_ratio, d_state, mlp_ratio=4.0, *, z_gate=False,
                    conv_bias=False, downsample='v3', patch_embed='v2', m0=False, device=META):
    """An upstream MzeroMiko/VMamba ``VSSM`` classification state dict (``op``
    keys): ``in_proj`` (d_inner or 2 d_inner with the z gate), per-direction
    ``x_proj_weight`` (4, R + 2N, d_inner), ``dt_projs_*``, ``A_logs`` (4 d_inner, N),
    ``Ds``; MLP; downsample v1 (PatchMerging2D) / v2 (2x2 conv) / v3 (3x3
    conv, Sequential index 1 and norm 3); patch embed v1 (one 4x4 conv) / v2;
    ``m0``: the Mamba2 blocks (``Ds`` (4, R, d_inner / R), ``A_logs`` (4, R),
    the conv inside a Sequential)."""
    t = tensor(device)
    dims = [dims * 2**i for i in range(len(depths))] if isinstance(dims, int) else dims
    d0 = dims[0]
    sd = {}
    if patch_embed == 'v2':
        sd.update({'patch_embed.0.weight': t(d0 // 2, 3, 3, 3), 'patch_embed.0.bias': t(d0 // 2),
                   'patch_embed.2.weight': t(d0 // 2), 'patch_embed.2.bias': t(d0 // 2),
                   'patch_embed.5.weight': t(d0, d0 // 2, 3, 3), 'patch_embed.5.bias': t(d0),
                   'patch_embed.7.weight': t(d0), 'patch_embed.7.bias': t(d0)})
    else:
        sd.update({'patch_embed.0.weight': t(d0, 3, 4, 4), 'patch_embed.0.bias': t(d0),
                   'patch_embed.2.weight': t(d0), 'patch_embed.2.bias': t(d0)})
    for i, (depth, C) in enumerate(zip(depths, dims)):
        di, R, N = int(ssm_ratio * C), math.ceil(C / 16), d_state
        for j in range(depth):
            b = f'layers.{i}.blocks.{j}.'
            sd.update({b + 'norm.weight': t(C), b + 'norm.bias': t(C),
                       b + 'op.in_proj.weight': t((2 if z_gate else 1) * di, C),
                       b + 'op.conv2d.weight': t(di, 1, 3, 3),
                       b + 'op.x_proj_weight': t(4, R + 2 * N, di),
                       b + 'op.dt_projs_weight': t(4, di, R), b + 'op.dt_projs_bias': t(4, di),
                       b + 'op.A_logs': t(4 * di, N), b + 'op.Ds': t(4 * di),
                       b + 'op.out_norm.weight': t(di), b + 'op.out_norm.bias': t(di),
                       b + 'op.out_proj.weight': t(C, di)})
            if m0:
                sd.update({b + 'op.Ds': t(4, R, di // R), b + 'op.A_logs': t(4, R),
                           b + 'op.dt_projs_bias': t(4, R),
                           b + 'op.conv2d.1.weight': sd.pop(b + 'op.conv2d.weight')})
                del sd[b + 'op.dt_projs_weight']
            if conv_bias:
                sd[b + 'op.conv2d.bias'] = t(di)
            if mlp_ratio:
                hid = int(C * mlp_ratio)
                sd.update({b + 'norm2.weight': t(C), b + 'norm2.bias': t(C),
                           b + 'mlp.fc1.weight': t(hid, C), b + 'mlp.fc1.bias': t(hid),
                           b + 'mlp.fc2.weight': t(C, hid), b + 'mlp.fc2.bias': t(C)})
        if i < len(depths) - 1:
            d = f'layers.{i}.downsample.'
            C2 = dims[i + 1]
            if downsample == 'v1':
                sd.update({d + 'reduction.weight': t(C2, 4 * C), d + 'norm.weight': t(4 * C),
                           d + 'norm.bias': t(4 * C)})
            else:
                k = 3 if downsample == 'v3' else 2
                sd.update({d + '1.weight': t(C2, C, k, k), d + '1.bias': t(C2),
                           d + '3.weight': t(C2), d + '3.bias': t(C2)})
    c = dims[-1]
    sd.update({'classifier.norm.weight': t(c), 'classifier.norm.bias': t(c),
               'classifier.head.weight': t(1000, c), 'classifier.head.bias': t(1000)})
    return sd


def vmamba_v0_first_release(depths=(2, 2, 9, 2), dims=96, device=META):
    """The first VMamba release (``vssmtiny_dp01_ckpt_epoch_292.pth``):
    ``blocks.j.ln_1`` + ``blocks.j.self_attention.*`` (z gate, conv bias,
    d_state 16, ssm_ratio 2), no MLP, PatchMerging2D, PatchEmbed2D."""
    t = tensor(device)
    dims = [dims * 2**i for i in range(len(depths))]
    sd = {'patch_embed.proj.weight': t(dims[0], 3, 4, 4), 'patch_embed.proj.bias': t(dims[0]),
          'patch_embed.norm.weight': t(dims[0]), 'patch_embed.norm.bias': t(dims[0])}
    for i, (depth, C) in enumerate(zip(depths, dims)):
        di, R, N = 2 * C, math.ceil(C / 16), 16
        for j in range(depth):
            b = f'layers.{i}.blocks.{j}.'
            a = b + 'self_attention.'
            sd.update({b + 'ln_1.weight': t(C), b + 'ln_1.bias': t(C),
                       a + 'in_proj.weight': t(2 * di, C), a + 'conv2d.weight': t(di, 1, 3, 3),
                       a + 'conv2d.bias': t(di), a + 'x_proj_weight': t(4, R + 2 * N, di),
                       a + 'dt_projs_weight': t(4, di, R), a + 'dt_projs_bias': t(4, di),
                       a + 'A_logs': t(4 * di, N), a + 'Ds': t(4 * di),
                       a + 'out_norm.weight': t(di), a + 'out_norm.bias': t(di),
                       a + 'out_proj.weight': t(C, di)})
        if i < len(depths) - 1:
            d = f'layers.{i}.downsample.'
            sd.update({d + 'reduction.weight': t(2 * C, 4 * C), d + 'norm.weight': t(4 * C),
                       d + 'norm.bias': t(4 * C)})
    sd.update({'norm.weight': t(dims[-1]), 'norm.bias': t(dims[-1]),
               'head.weight': t(1000, dims[-1]), 'head.bias': t(1000)})
    return sd


VMAMBA_RELEASED = {  # upstream function: (depths, dims, ssm_ratio, d_state), our arch
    'vmamba_tiny_s1l8': (((2, 2, 8, 2), 96, 1.0, 1), 'tiny'),
    'vmamba_small_s2l15': (((2, 2, 15, 2), 96, 2.0, 1), 'small'),
    'vmamba_base_s2l15': (((2, 2, 15, 2), 128, 2.0, 1), 'base'),
}
VMAMBA_TEST = ((1, 1, 2, 1), 16, 1.0, 1, 2.0)  # our 'test' arch


@pytest.mark.parametrize('name', sorted(VMAMBA_RELEASED))
def test_vmamba_detects_released_v2_sizes(name):
    (depths, dims, ratio, d_state), arch = VMAMBA_RELEASED[name]
    info = detect_vmamba_variant(vmamba_upstream(depths, dims, ratio, d_state))
    assert info['variant'] == 'v2' and info['convertible'] and info['arch'] == arch
    assert info['params']['depths'] == depths and info['params']['dims'] == dims
    assert info['params']['ssm_ratio'] == ratio and info['params']['d_state'] == d_state
    assert name in info['facts']


def test_vmamba_detects_unreleased_v2_size_as_no_arch():
    info = detect_vmamba_variant(vmamba_upstream((2, 2, 5, 2), 96, 2.0, 1))
    assert info['convertible'] and info['arch'] is None and 's2l5' in info['facts']


@pytest.mark.parametrize('kind', ['first release', 'vanilla'])
def test_vmamba_detects_v0(kind):
    sd = (vmamba_v0_first_release() if kind == 'first release' else
          vmamba_upstream((2, 2, 9, 2), 96, 2.0, 16, mlp_ratio=0.0, z_gate=True, conv_bias=True,
                          downsample='v1', patch_embed='v1'))
    info = detect_vmamba_variant(sd)
    assert info['variant'] == 'v0' and not info['convertible'] and info['arch'] is None
    assert info['params']['d_state'] == 16 and info['params']['depths'] == (2, 2, 9, 2)
    assert ('self_attention' in info['facts']) == (kind == 'first release')
    assert 'VMamba-T v0' in info['facts'] and 'downsample v1' in info['facts']


@pytest.mark.parametrize('switch,words', [
    (dict(z_gate=True), 'z gate'), (dict(downsample='v2'), 'downsample v2'),
    (dict(patch_embed='v1'), 'patch embed v1'), (dict(mlp_ratio=0.0), 'no MLP')])
def test_vmamba_v2_family_ablations_are_not_convertible(switch, words):
    info = detect_vmamba_variant(vmamba_upstream((2, 2, 8, 2), 96, 1.0, 1, **switch))
    assert not info['convertible'] and words in info['facts'], info['facts']


def test_vmamba_mamba2_blocks_are_not_convertible():
    info = detect_vmamba_variant(vmamba_upstream((2, 2, 4, 2), 96, 1.0, 64, m0=True))
    assert info['variant'] == 'm0' and not info['convertible'] and 'Mamba2' in info['facts']


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'test'])
def test_vmamba_own_layout_is_detected_as_its_arch(arch):
    with META:
        sd = VMamba(arch=arch).state_dict()
    info = detect_vmamba_variant(sd)
    assert info['convertible'] and info['arch'] == arch and info['variant'] == 'v2'


def test_vmamba_upstream_fixture_is_convertible_v2():
    """The real upstream checkpoint of the parity test (made by upstream's code)."""
    fx = torch.load(osp.join(DATA, 'vmamba_upstream_test_arch.pth'), weights_only=True)
    info = detect_vmamba_variant(fx['model'])
    assert info['variant'] == 'v2' and info['convertible']
    assert info['params']['depths'] == (1, 1, 2, 1) and info['params']['dims'] == 16
    assert info['params']['conv_bias'] is False and info['params']['mlp_ratio'] == 2.0


def test_vmamba_v0_checkpoint_is_refused_naming_both(tmp_path):
    with META:
        net = VMamba(arch='tiny')
    path = save(tmp_path, vmamba_v0_first_release(), 'vssmtiny_dp01_ckpt_epoch_292.pth')
    with pytest.raises(CheckpointVariantError) as e:
        load(net, path)
    msg = str(e.value)
    assert 'vssmtiny_dp01_ckpt_epoch_292.pth' in msg
    assert 'VMamba-T v0' in msg and 'self_attention keys' in msg and 'd_state 16' in msg
    assert "the model is VMamba arch 'tiny'" in msg and 'd_state 1' in msg
    assert 'v2 layout' in msg and 'not convertible' in msg and 'vmamba_tiny_s1l8' in msg


def test_vmamba_other_size_is_refused_naming_both(tmp_path):
    with META:
        net = VMamba(arch='tiny')
    path = save(tmp_path, vmamba_upstream((2, 2, 15, 2), 96, 2.0, 1))
    with pytest.raises(CheckpointVariantError) as e:
        load(net, path)
    msg = str(e.value)
    assert "It looks like VMamba arch 'small' (VMamba-S[s2l15] (vmamba_small_s2l15), v2" in msg
    assert 'depths 2,2,15,2, dims 96, ssm_ratio 2, d_state 1' in msg
    assert "but the model's arch is 'tiny' (depths 2,2,8,2, dims 96, ssm_ratio 1" in msg
    assert "Build the model with arch='small'" in msg and 'Nothing was loaded' in msg


def test_vmamba_deeper_checkpoint_no_longer_loads_silently(tmp_path):
    """One more block in stage 2 than the 'test' arch: every tensor of the model
    is there with its shape (the extra block would be an ignored unexpected
    key); the size check refuses it, and strict=False loads what fits."""
    depths, dims, ratio, d_state, mlp = VMAMBA_TEST
    sd = vmamba_upstream((1, 1, 3, 1), dims, ratio, d_state, mlp, device='cpu')
    path = save(tmp_path, sd)
    net = VMamba(arch='test')
    before = snapshot(net)
    with pytest.raises(CheckpointVariantError, match="depths 1,1,3,1.*arch is 'test'"):
        load(net, path)
    assert unchanged(net, before)
    report = load(net, path, strict=False)
    assert 'stages.2.blocks.2.ssm.A_log' in report['unexpected']
    assert torch.equal(net.stages[2].blocks[1].ssm.A_log, sd['layers.2.blocks.1.op.A_logs'])


def test_vmamba_matching_upstream_checkpoint_loads(tmp_path):
    depths, dims, ratio, d_state, mlp = VMAMBA_TEST
    sd = vmamba_upstream(depths, dims, ratio, d_state, mlp, device='cpu')
    net = VMamba(arch='test')
    report = load(net, save(tmp_path, sd))
    assert not report['mismatched'] and all(k.startswith('norm') for k in report['missing'])
    assert torch.equal(net.stages[1].downsample.conv.weight, sd['layers.0.downsample.1.weight'])
    assert torch.equal(net.patch_embed.conv2.weight, sd['patch_embed.5.weight'])


def test_vmamba_conv_bias_is_compared_with_the_model(tmp_path):
    sd = vmamba_upstream((2, 2, 8, 2), 96, 1.0, 1, conv_bias=True)
    path = save(tmp_path, sd)
    with META:
        net = VMamba(arch='tiny')
    with pytest.raises(CheckpointVariantError, match='differ in conv_bias.*conv_bias=True'):
        load(net, path)
    with META:
        net = VMamba(arch='tiny', conv_bias=True)
    load(net, path)  # the matching build loads


def test_custom_arch_is_described_only_when_shapes_do_not_fit(tmp_path):
    depths, dims, ratio, d_state, mlp = VMAMBA_TEST
    custom = dict(VMamba.arch_zoo['test'])
    # a deeper checkpoint into a custom arch: no name to compare, the model's
    # tensors all fit: loads (the extra block is reported as unexpected)
    deeper = save(tmp_path, vmamba_upstream((1, 1, 3, 1), dims, ratio, d_state, mlp,
                                            device='cpu'), 'deeper.pth')
    load(VMamba(arch=custom), deeper)
    # a wider one does not fit: the message says what the checkpoint is
    wider = save(tmp_path, vmamba_upstream(depths, 32, ratio, d_state, mlp, device='cpu'),
                 'wider.pth')
    with pytest.raises(CheckpointMismatchError) as e:
        load(VMamba(arch=custom), wider)
    assert not isinstance(e.value, CheckpointVariantError)
    msg = str(e.value)
    assert 'It looks like VMamba v2 (' in msg and 'dims 32' in msg
    assert 'the model has a custom arch dict (depths 1,1,2,1, dims 16' in msg
    assert 'shape mismatches' in msg


# --------------------------------------------------------------------- Vim
def vim_upstream(embed_dims, depth, d_state=16, expand=2, *, cls_token='middle', grid=14,
                 bimamba_v2=True, rms_norm=True, device=META):
    """A hustvl/Vim ``VisionMamba`` state dict: ``patch_embed.proj``, a
    ``pos_embed`` of grid^2 (+ class tokens) entries, ``layers.{i}.norm`` and
    ``layers.{i}.mixer`` (mamba_ssm Mamba with bimamba v2's ``*_b`` copies),
    ``norm_f``, ``head``."""
    t = tensor(device)
    C, di, R = embed_dims, expand * embed_dims, math.ceil(embed_dims / 16)
    n_cls = {'middle': 1, None: 0, 'double': 2}[cls_token]
    sd = {'patch_embed.proj.weight': t(C, 3, 16, 16), 'patch_embed.proj.bias': t(C),
          'pos_embed': t(1, grid * grid + n_cls, C), 'norm_f.weight': t(C),
          'head.weight': t(1000, C), 'head.bias': t(1000)}
    if cls_token == 'middle':
        sd['cls_token'] = t(1, 1, C)
    elif cls_token == 'double':
        sd.update({'cls_token_head': t(1, 1, C), 'cls_token_tail': t(1, 1, C)})
    if not rms_norm:
        sd['norm_f.bias'] = t(C)
    for i in range(depth):
        m = f'layers.{i}.mixer.'
        sd.update({f'layers.{i}.norm.weight': t(C), m + 'in_proj.weight': t(2 * di, C),
                   m + 'out_proj.weight': t(C, di)})
        if not rms_norm:
            sd[f'layers.{i}.norm.bias'] = t(C)
        for sfx in ('', '_b') if bimamba_v2 else ('', ):
            sd.update({m + f'conv1d{sfx}.weight': t(di, 1, 4), m + f'conv1d{sfx}.bias': t(di),
                       m + f'x_proj{sfx}.weight': t(R + 2 * d_state, di),
                       m + f'dt_proj{sfx}.weight': t(di, R), m + f'dt_proj{sfx}.bias': t(di),
                       m + ('A_log' if not sfx else 'A_b_log'): t(di, d_state),
                       m + f'D{sfx}': t(di)})
    return sd


@pytest.mark.parametrize('arch,dims', [('tiny', 192), ('small', 384), ('base', 768)])
@pytest.mark.parametrize('cls_token', ['middle', None])
def test_vim_detects_size_and_class_token(arch, dims, cls_token):
    info = detect_vim_variant(vim_upstream(dims, 24, cls_token=cls_token))
    assert info['convertible'] and info['arch'] == arch
    assert info['variant'] == ('middle class token' if cls_token else 'no class token')
    assert info['extra'] == dict(with_cls_token=bool(cls_token), pretrain_grid=(14, 14))


@pytest.mark.parametrize('kw,words', [
    (dict(cls_token='double'), 'two class tokens'), (dict(bimamba_v2=False), 'bimamba v1'),
    (dict(rms_norm=False), 'LayerNorm')])
def test_vim_unsupported_variants(kw, words, tmp_path):
    info = detect_vim_variant(vim_upstream(192, 24, **kw))
    assert not info['convertible'] and words in info['facts']
    with META:
        net = Vim(arch='tiny')
    with pytest.raises(CheckpointVariantError, match=f"{words}.*the model is Vim arch 'tiny'"):
        load(net, save(tmp_path, vim_upstream(192, 24, **kw)))


def test_vim_own_layout_and_fixture_are_detected():
    for arch in ('tiny', 'test'):
        for cls in (False, True):
            with META:
                sd = Vim(arch=arch, with_cls_token=cls).state_dict()
            info = detect_vim_variant(sd)
            assert info['arch'] == arch and info['extra']['with_cls_token'] is cls
    fx = torch.load(osp.join(DATA, 'vim_upstream_test_arch.pth'), weights_only=True)
    info = detect_vim_variant(fx['model'])
    assert info['convertible'] and info['variant'] == 'middle class token'
    assert info['params'] == dict(embed_dims=32, depth=4, d_state=4, expand=2)
    assert info['extra']['pretrain_grid'] == (4, 4)


def test_vim_other_size_is_refused_naming_both(tmp_path):
    with META:
        net = Vim(arch='tiny')
    with pytest.raises(CheckpointVariantError) as e:
        load(net, save(tmp_path, vim_upstream(384, 24)))
    msg = str(e.value)
    assert "It looks like Vim arch 'small' (Vim-S, upstream layout" in msg
    assert 'middle class token' in msg and 'embed_dims 384' in msg
    assert "the model's arch is 'tiny' (embed_dims 192" in msg and 'with_cls_token False' in msg


def test_vim_class_token_variants_load_or_are_named(tmp_path):
    """A checkpoint with the middle class token loads into a model without one
    (the converter drops the token); one without a token does not fit a model
    with one, and the message says which has what."""
    with_cls = save(tmp_path, vim_upstream(32, 4, 4, cls_token='middle', grid=4,
                                           device='cpu'), 'cls.pth')
    load(Vim(arch='test', pretrain_img_size=64), with_cls)
    load(Vim(arch='test', pretrain_img_size=64, with_cls_token=True), with_cls)
    no_cls = save(tmp_path, vim_upstream(32, 4, 4, cls_token=None, grid=4, device='cpu'),
                  'nocls.pth')
    load(Vim(arch='test', pretrain_img_size=64), no_cls)
    net = Vim(arch='test', pretrain_img_size=64, with_cls_token=True)
    with pytest.raises(CheckpointMismatchError) as e:
        load(net, no_cls)
    msg = str(e.value)
    assert 'no class token' in msg and 'with_cls_token False' in msg
    assert "the model's arch is 'test'" in msg and 'with_cls_token True' in msg
    assert 'cls_token' in msg  # the missing tensor


# -------------------------------------------------------------------- Swin
def swin_upstream(depths, dims, heads, window=7, layout='official', v2=False, device=META):
    """A microsoft/Swin-Transformer state dict (``layers.i.blocks.j``, the
    merging at the end of layer i, buffers included) or mmdet's
    ``SwinTransformer`` (``stages.i.blocks.j.attn.w_msa``, ``ffn``)."""
    t = tensor(device)
    dims = [dims * 2**i for i in range(len(depths))]
    mm = layout == 'mmdet'
    root = 'stages' if mm else 'layers'
    pe = 'patch_embed.projection.' if mm else 'patch_embed.proj.'
    sd = {pe + 'weight': t(dims[0], 3, 4, 4), pe + 'bias': t(dims[0]),
          'patch_embed.norm.weight': t(dims[0]), 'patch_embed.norm.bias': t(dims[0])}
    n = window * window
    for i, (depth, C, h) in enumerate(zip(depths, dims, heads)):
        for j in range(depth):
            b = f'{root}.{i}.blocks.{j}.'
            a = b + ('attn.w_msa.' if mm else 'attn.')
            sd.update({b + 'norm1.weight': t(C), b + 'norm1.bias': t(C),
                       a + 'qkv.weight': t(3 * C, C), a + 'qkv.bias': t(3 * C),
                       a + 'proj.weight': t(C, C), a + 'proj.bias': t(C),
                       b + 'norm2.weight': t(C), b + 'norm2.bias': t(C)})
            if v2:
                sd.update({a + 'logit_scale': t(h, 1, 1), a + 'cpb_mlp.0.weight': t(512, 2),
                           a + 'cpb_mlp.2.weight': t(h, 512), a + 'q_bias': t(C)})
            else:
                sd[a + 'relative_position_bias_table'] = t((2 * window - 1)**2, h)
                sd[a + 'relative_position_index'] = torch.zeros(n, n, dtype=torch.long,
                                                                device=device)
            fc1, fc2 = ('ffn.layers.0.0.', 'ffn.layers.1.') if mm else ('mlp.fc1.', 'mlp.fc2.')
            sd.update({b + fc1 + 'weight': t(4 * C, C), b + fc1 + 'bias': t(4 * C),
                       b + fc2 + 'weight': t(C, 4 * C), b + fc2 + 'bias': t(C)})
            if j % 2 and not mm:
                sd[b + 'attn_mask'] = t(4, n, n)
        if i < len(depths) - 1:
            sd.update({f'{root}.{i}.downsample.reduction.weight': t(2 * C, 4 * C),
                       f'{root}.{i}.downsample.norm.weight': t(4 * C),
                       f'{root}.{i}.downsample.norm.bias': t(4 * C)})
    sd.update({'norm.weight': t(dims[-1]), 'head.weight': t(1000, dims[-1])})
    return sd


SWIN = {'Swin-T': ((2, 2, 6, 2), 96, (3, 6, 12, 24), 'tiny'),
        'Swin-S': ((2, 2, 18, 2), 96, (3, 6, 12, 24), 'small'),
        'Swin-B': ((2, 2, 18, 2), 128, (4, 8, 16, 32), 'base'),
        'Swin-L': ((2, 2, 18, 2), 192, (6, 12, 24, 48), None)}


@pytest.mark.parametrize('label', sorted(SWIN))
@pytest.mark.parametrize('window,layout', [(7, 'official'), (12, 'official'), (7, 'mmdet')])
def test_swin_detects_size_and_window(label, window, layout):
    depths, dims, heads, arch = SWIN[label]
    info = detect_swin_variant(swin_upstream(depths, dims, heads, window, layout))
    assert info['convertible'] and info['arch'] == arch and label in info['facts']
    assert info['params'] == dict(depths=depths, dims=dims, num_heads=heads)
    assert info['extra'] == dict(window_size=window)


def test_swin_window_size_is_resized_not_reported(tmp_path):
    """A window-12 checkpoint (swin_base_patch4_window12_384) into the window-7
    arch: the converter resizes the bias tables, so the same size loads."""
    info = check_checkpoint_variant(Swin(arch='test'), swin_upstream(
        (1, 1, 2, 1), 16, (1, 1, 2, 2), window=12, device='cpu'))
    assert not info['diff'] and not info['conflict'] and info['arch'] == 'test'
    sd = swin_upstream((1, 1, 2, 1), 16, (1, 1, 2, 2), window=12, device='cpu')
    net = Swin(arch='test')
    load(net, save(tmp_path, sd))
    assert net.stages[0].blocks[0].attn.relative_position_bias_table.shape == (13 * 13, 1)
    with META:
        base = Swin(arch='base')
    assert not check_checkpoint_variant(base, swin_upstream(*SWIN['Swin-B'][:3], 12))['conflict']


def test_swin_small_into_tiny_is_refused_naming_both(tmp_path):
    """Swin-S has every tensor of Swin-T with the same shape (and 12 more
    blocks): it used to load silently."""
    with META:
        net = Swin(arch='tiny')
    path = save(tmp_path, swin_upstream(*SWIN['Swin-S'][:3]), 'swin_small_patch4_window7_224.pth')
    with pytest.raises(CheckpointVariantError) as e:
        load(net, path)
    msg = str(e.value)
    assert "does not fit Swin (arch 'tiny')" in msg and 'swin_small_patch4_window7_224' in msg
    assert "It looks like Swin arch 'small' (Swin-S, official layout; depths 2,2,18,2" in msg
    assert "but the model's arch is 'tiny' (depths 2,2,6,2, dims 96" in msg
    assert 'they differ in depths' in msg and "arch='small'" in msg


def test_swin_large_has_no_arch_here(tmp_path):
    with META:
        net = Swin(arch='base')
    with pytest.raises(CheckpointVariantError) as e:
        load(net, save(tmp_path, swin_upstream(*SWIN['Swin-L'][:3], 12)))
    msg = str(e.value)
    assert 'It looks like Swin-L (official layout' in msg and "no arch of Swin's table" in msg
    assert 'custom arch dict with depths=(2, 2, 18, 2), dims=192, num_heads=(6, 12, 24, 48)' in msg


def test_swin_v2_is_not_convertible(tmp_path):
    sd = swin_upstream((2, 2, 6, 2), 96, (3, 6, 12, 24), 8, v2=True)
    info = detect_swin_variant(sd)
    assert not info['convertible'] and info['variant'] == 'v2' and 'Swin V2-T' in info['facts']
    with META:
        net = Swin(arch='tiny')
    with pytest.raises(CheckpointVariantError, match="Swin V2-T.*the model is Swin arch 'tiny'"):
        load(net, save(tmp_path, sd))


# ------------------------------------------------------------------- PVTv2
def pvt_official(arch, v1=False, device=META):
    """A whai362/PVT v2 classification state dict (``patch_embed{s}``,
    ``block{s}.{j}``, ``norm{s}``, ``head``) for an arch-table entry: the
    strided ``attn.sr`` conv of kernel sr_ratio where it is > 1, or (linear)
    a 1x1 ``attn.sr`` after the pool in every stage; ``v1``: PVT v1's
    absolute position embeddings on top."""
    t = tensor(device)
    a = PVTv2.arch_zoo[arch] if isinstance(arch, str) else arch
    sd, cin = {}, 3
    for i, (C, depth) in enumerate(zip(a['embed_dims'], a['depths'])):
        s, k = i + 1, (7 if i == 0 else 3)
        sd.update({f'patch_embed{s}.proj.weight': t(C, cin, k, k), f'patch_embed{s}.proj.bias':
                   t(C), f'patch_embed{s}.norm.weight': t(C), f'patch_embed{s}.norm.bias': t(C),
                   f'norm{s}.weight': t(C), f'norm{s}.bias': t(C)})
        if v1:
            sd[f'pos_embed{s}'] = t(1, 56 * 56 // 4**i, C)
        hid = int(C * a['mlp_ratios'][i])
        for j in range(depth):
            b = f'block{s}.{j}.'
            sd.update({b + 'norm1.weight': t(C), b + 'attn.q.weight': t(C, C),
                       b + 'attn.kv.weight': t(2 * C, C), b + 'attn.proj.weight': t(C, C),
                       b + 'norm2.weight': t(C), b + 'mlp.fc1.weight': t(hid, C),
                       b + 'mlp.dwconv.dwconv.weight': t(hid, 1, 3, 3),
                       b + 'mlp.fc2.weight': t(C, hid)})
            for p in ('norm1', 'attn.q', 'attn.kv', 'attn.proj', 'norm2', 'mlp.fc1',
                      'mlp.dwconv.dwconv', 'mlp.fc2'):
                sd[b + p + '.bias'] = t(sd[b + p + '.weight'].shape[0])
            r = 1 if a['linear'] else a['sr_ratios'][i]
            if a['linear'] or r > 1:
                sd.update({b + 'attn.sr.weight': t(C, C, r, r), b + 'attn.sr.bias': t(C),
                           b + 'attn.norm.weight': t(C), b + 'attn.norm.bias': t(C)})
        cin = C
    sd.update({'head.weight': t(1000, a['embed_dims'][-1]), 'head.bias': t(1000)})
    return sd


def pvt_mmdet_layout(sd):
    """The official layout renamed as mmdet's ``PyramidVisionTransformerV2``
    (``layers.i.0`` patch embed, ``layers.i.1.j`` blocks with packed
    ``in_proj``, ``ffn.layers.{0,1,4}`` convs, ``layers.i.2`` norm); only the
    shapes the detector reads are kept faithful."""
    out = {}
    for k, v in sd.items():
        head, _, rest = k.partition('.')
        if head.startswith('patch_embed'):
            part = rest.replace('proj.', 'projection.')
            out[f'layers.{int(head[11:]) - 1}.0.{part}'] = v
        elif head.startswith('block'):
            j, _, r = rest.partition('.')
            pre = f'layers.{int(head[5:]) - 1}.1.{j}.'
            if r == 'mlp.fc1.weight':
                out[pre + 'ffn.layers.0.weight'] = v[:, :, None, None]
            elif r.startswith(('attn.q.', 'attn.kv.')):
                if r == 'attn.q.weight':
                    out[pre + 'attn.attn.in_proj_weight'] = v.new_empty(3 * v.shape[0],
                                                                        v.shape[1])
            else:
                out[pre + r] = v
        elif head.startswith('norm'):
            out[f'layers.{int(head[4:]) - 1}.2.{rest}'] = v
    return out


@pytest.mark.parametrize('arch', ['b0', 'b1', 'b2', 'b2_li', 'b3', 'b4', 'b5'])
def test_pvtv2_detects_arch(arch):
    info = detect_pvtv2_variant(pvt_official(arch))
    assert info['convertible'] and info['arch'] == arch and f'pvt_v2_{arch}' in info['facts']
    assert info['variant'] == ('linear' if arch == 'b2_li' else 'sr')
    assert detect_pvtv2_variant(pvt_mmdet_layout(pvt_official(arch)))['arch'] == arch
    with META:
        assert detect_pvtv2_variant(PVTv2(arch=arch).state_dict())['arch'] == arch


@pytest.mark.parametrize('ckpt,model,differ', [('b3', 'b2', 'depths'), ('b2_li', 'b2', 'linear'),
                                               ('b5', 'b4', 'depths, mlp_ratios')])
def test_pvtv2_other_arch_is_refused_naming_both(ckpt, model, differ, tmp_path):
    with META:
        net = PVTv2(arch=model)
    with pytest.raises(CheckpointVariantError) as e:
        load(net, save(tmp_path, pvt_official(ckpt), f'pvt_v2_{ckpt}.pth'))
    msg = str(e.value)
    assert f"It looks like PVTv2 arch '{ckpt}' (PVTv2-{ckpt} (pvt_v2_{ckpt}), official" in msg
    assert f"but the model's arch is '{model}'" in msg and f'they differ in {differ}' in msg


def test_pvt_v1_is_not_convertible(tmp_path):
    info = detect_pvtv2_variant(pvt_official('b1', v1=True))
    assert info['variant'] == 'v1' and not info['convertible']
    with META:
        net = PVTv2(arch='b1')
    with pytest.raises(CheckpointVariantError, match="PVT v1.*the model is PVTv2 arch 'b1'"):
        load(net, save(tmp_path, pvt_official('b1', v1=True)))


def test_pvtv2_matching_official_checkpoint_loads(tmp_path):
    sd = pvt_official('test', device='cpu')
    net = PVTv2(arch='test')
    load(net, save(tmp_path, sd))
    assert torch.equal(net.stages[1].blocks[0].attn.sr.weight, sd['block2.0.attn.sr.weight'])


# ----------------------------------------------- MLLA, BiFormer, Vision-RWKV
@pytest.mark.parametrize('cls,detect', [(MLLA, detect_mlla_variant),
                                        (BiFormer, detect_biformer_variant),
                                        (VisionRWKV, detect_vision_rwkv_variant)])
def test_sizes_of_the_other_families(cls, detect, tmp_path):
    shapes = {}
    for arch in ('tiny', 'small', 'base'):
        with META:
            shapes[arch] = cls(arch=arch).state_dict()
        info = detect(shapes[arch])
        assert info['arch'] == arch, (arch, info['facts'])
    with META:
        net = cls(arch='tiny')
    with pytest.raises(CheckpointVariantError) as e:
        load(net, save(tmp_path, shapes['small']))
    msg = str(e.value)
    assert "arch 'small'" in msg and "but the model's arch is 'tiny'" in msg


def test_upstream_fixtures_of_the_other_families():
    fx = torch.load(osp.join(DATA, 'mlla_upstream_test_arch.pth'), weights_only=True)
    info = detect_mlla_variant(fx['model'])
    assert info['params'] == dict(embed_dims=4, depths=(1, 1, 2, 1), mlp_ratio=2.0,
                                  qkv_bias=True) and info['layout'] == 'upstream layout'
    fx = torch.load(osp.join(DATA, 'biformer_upstream_test_arch.pth'), weights_only=True)
    info = detect_biformer_variant(fx['cls_state_dict'])
    assert info['params'] == dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), mlp_ratio=2.0)
    fx = torch.load(osp.join(DATA, 'vrwkv_upstream_test_arch.pth'), weights_only=True)
    sd = {k[len('backbone.'):]: v for k, v in fx['state_dict'].items()}
    info = detect_vision_rwkv_variant(sd)
    assert info['params'] == dict(embed_dims=32, depth=4, key_norm=True)
    assert info['arch'] == 'test' and info['layout'] == 'upstream layout'


def test_detectors_ignore_other_families():
    with META:
        sds = {c.__name__: c(arch='test').state_dict()
               for c in (VMamba, Vim, Swin, PVTv2, MLLA, BiFormer, VisionRWKV)}
    detectors = {'VMamba': detect_vmamba_variant, 'Vim': detect_vim_variant,
                 'Swin': detect_swin_variant, 'PVTv2': detect_pvtv2_variant,
                 'MLLA': detect_mlla_variant, 'BiFormer': detect_biformer_variant,
                 'VisionRWKV': detect_vision_rwkv_variant}
    for name, detect in detectors.items():
        for other, sd in sds.items():
            info = detect(sd)
            assert (info is not None) == (name == other), (name, other)
            if info is not None:
                assert info['arch'] == 'test'
