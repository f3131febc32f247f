#!/usr/bin/env python
"""Regenerate tests/data/plain_mamba_upstream_test_arch.pth from a
ChenhongyiYang/PlainMamba checkout (its ``PlainMamba`` classification model,
``PlainMambaLayer`` / ``PlainMamba2D``, ``ConvPatchEmbed`` and the detection
code's ``PlainMambaAdapter`` with its ``adapter_modules.py``; never copied
here).

    python tools/dev/make_plain_mamba_parity_fixture.py --plainmamba-repo /path/to/PlainMamba

Upstream's mmcv 1.x / mmcls / mmdet 2.x imports are replaced by small
stand-ins (BaseModule = an nn.Module taking init_cfg, mmcv's
``build_norm_layer`` for LN with its ``ln{postfix}`` names, its 'corner'
``AdaptivePadding``, a DropPath, mmcls' bicubic ``resize_pos_embed``, a no-op
registry), einops' one ``repeat`` by ``Tensor.repeat``, mamba_ssm's CUDA
``selective_scan_fn`` by our reference ``selective_scan_naive`` (checked
against mamba's own reference by tests/ops), and the adapter's compiled
deformable attention by mmcv 2.1's PyTorch
``multi_scale_deformable_attn_pytorch``.

Saves, with perturbed weights and BN statistics:

* ``plain``: a tiny PlainMamba (embed 32, depth 4, one stem conv, a
  depthwise conv after layer 0, d_state 4, 3x3 mixer conv, 64 px position
  grid) with outputs after every layer (``norm_layer{i}`` and the final
  ``ln1``: upstream's segmentation layout), its state dict (``backbone.``
  keys) and its outputs at 64x64 and 75x101 (5x7 tokens: odd, non-square
  snake orders, padding after the stem, a resized position embedding);
* ``adapter``: upstream's ``PlainMambaAdapter`` on the same model (SPM width
  16, 4 deformable heads, ratio 0.5, one interaction block per layer, extra
  extractors, the plain tokens added at all scales, ``ad_norm1..4``), its
  state dict and its four outputs at 64x64 and 64x96;
* ``orders``: upstream's scan orders, inverse orders and direction codes
  for a few grid sizes;
* ``counts``: upstream's parameter counts of L1 / L2 / L3 (the backbone,
  ``final_norm`` on, no head).
"""
import argparse
import importlib.util
import os.path as osp
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# the stand-ins the Vision-RWKV fixtures share
from make_vrwkv_adapter_parity_fixture import _DropPath, _MSDeformAttnFunction  # noqa: E402
from make_vrwkv_parity_fixture import _resize_pos_embed, mod  # noqa: E402


class _BaseModule(nn.Module):  # mmcv.runner.BaseModule(init_cfg), with init_weights

    def __init__(self, init_cfg=None):
        super().__init__()
        self.init_cfg = init_cfg

    def init_weights(self):
        pass


def _build_dropout(cfg):
    assert cfg['type'] == 'DropPath', cfg
    return _DropPath(cfg['drop_prob'])


def _build_norm_layer(cfg, dims, postfix=''):  # mmcv: LN named 'ln{postfix}'
    assert cfg['type'] == 'LN', cfg
    return f'ln{postfix}', nn.LayerNorm(dims, eps=cfg.get('eps', 1e-5))


class _AdaptivePadding(nn.Module):  # mmcv's, padding='corner': zeros bottom / right

    def __init__(self, kernel_size, stride, dilation, padding):
        super().__init__()
        assert padding == 'corner' and tuple(dilation) == (1, 1)
        self.k, self.s = tuple(kernel_size), tuple(stride)

    def get_pad_shape(self, hw):
        return [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(hw, self.k, self.s)]

    def forward(self, x):
        ph, pw = self.get_pad_shape(x.shape[-2:])
        return F.pad(x, [0, pw, 0, ph]) if ph or pw else x


def _repeat(t, pattern, **sizes):  # einops.repeat, the one pattern upstream uses
    assert pattern == 'n -> d n', pattern
    return t.unsqueeze(0).repeat(sizes['d'], 1)


def _selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    from mmvisbackbones.ops.selective_scan import selective_scan_naive
    return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                return_last_state)


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def install_stand_ins(repo):
    import mmcv.ops.multi_scale_deform_attn as msda  # the real mmcv, before the stubs
    registry = types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c))
    to2 = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)  # noqa: E731
    mod('einops', repeat=_repeat)
    mod('mmcv.runner', force_fp32=lambda **k: (lambda f: f))
    mod('mmcv.runner.base_module', BaseModule=_BaseModule, ModuleList=nn.ModuleList)
    mod('mmcv.cnn', build_norm_layer=_build_norm_layer, build_conv_layer=None)
    mod('mmcv.cnn.bricks')
    mod('mmcv.cnn.bricks.transformer', build_dropout=_build_dropout,
        AdaptivePadding=_AdaptivePadding)
    mod('mmcv.cnn.utils')
    mod('mmcv.cnn.utils.weight_init', trunc_normal_=nn.init.trunc_normal_)
    mod('mmcv.utils', to_2tuple=to2)
    msda.MultiScaleDeformableAttnFunction = _MSDeformAttnFunction
    for name in ('mmcls', 'mmcls.models', 'mmcls.models.backbones', 'mmcls.plain_mamba_dev',
                 'mmcls.plain_mamba_dev.models', 'mmcls.plain_mamba_dev.models.modules',
                 'mmcls.plain_mamba_dev.models.plain_mamba', 'mmdet', 'mmdet.models',
                 'mamba_ssm', 'mamba_ssm.ops', 'mamba_ssm.ops.triton', 'timm', 'timm.models'):
        mod(name)
    mod('mmcls.models.builder', BACKBONES=registry)
    mod('mmcls.models.utils', resize_pos_embed=_resize_pos_embed, to_2tuple=to2)
    mod('mmcls.models.backbones.base_backbone', BaseBackbone=_BaseModule)
    mod('mmdet.models.builder', BACKBONES=registry)
    mod('timm.models.layers', DropPath=_DropPath, trunc_normal_=nn.init.trunc_normal_)
    mod('mamba_ssm.ops.selective_scan_interface', selective_scan_fn=_selective_scan_fn)
    mod('mamba_ssm.ops.triton.layernorm', RMSNorm=None)
    pkg = osp.join(repo, 'mmcls', 'plain_mamba_dev', 'models')
    load('mmcls.plain_mamba_dev.models.modules.patch_embed',
         osp.join(pkg, 'modules', 'patch_embed.py'))
    load('mmcls.plain_mamba_dev.models.plain_mamba.plain_mamba_layer',
         osp.join(pkg, 'plain_mamba', 'plain_mamba_layer.py'))
    cls_mod = load('mmcls.plain_mamba_dev.models.plain_mamba.plain_mamba',
                   osp.join(pkg, 'plain_mamba', 'plain_mamba.py'))
    det = osp.join(repo, 'downstream', 'mmdetection', 'mmdet', 'models', 'backbones')
    mod('mmdet.models.backbones').__path__ = [det]
    load('mmdet.models.backbones.adapter_modules', osp.join(det, 'adapter_modules.py'))
    adapter_mod = load('mmdet.models.backbones.plain_mamba_adapter',
                       osp.join(det, 'plain_mamba_adapter.py'))
    return cls_mod.PlainMamba, adapter_mod.PlainMambaAdapter


#: the tiny model, in upstream's argument names
PLAIN_KW = dict(img_size=64, patch_size=16, embed_dims=32, num_layers=4, num_convs_patch_embed=1,
                layers_with_dwconv=[0], drop_path_rate=0.0,
                layer_cfgs=dict(use_rms_norm=False, mamba_cfg=dict(
                    d_state=4, expand=2, conv_size=3, dt_init='random', conv_bias=True,
                    bias=True, default_hw_shape=(4, 4))))
ADAPTER_KW = dict(conv_inplane=16, n_points=4, deform_num_heads=4, init_values=0.0,
                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], with_cffn=True,
                  cffn_ratio=0.25, deform_ratio=0.5, add_vit_feature=True,
                  use_extra_extractor=True, pretrain_size=64, final_norm=False)


#: grids whose scan orders (upstream's get_permute_order) the fixture keeps
ORDER_SHAPES = [(1, 1), (1, 5), (5, 1), (2, 2), (2, 3), (3, 4), (4, 3), (5, 7), (6, 6), (7, 2)]


def perturb(model):
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--plainmamba-repo', required=True)
    p.add_argument('--out', default='tests/data/plain_mamba_upstream_test_arch.pth')
    args = p.parse_args()
    UpPlainMamba, UpAdapter = install_stand_ins(osp.abspath(args.plainmamba_repo))

    torch.manual_seed(0)
    plain = UpPlainMamba(out_indices=[0, 1, 2, 3], final_norm=True, **PLAIN_KW).eval()
    perturb(plain)
    plain_inputs = [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 75, 101)]
    with torch.no_grad():
        plain_outs = [[o.clone() for o in plain(x)[1]] for x in plain_inputs]

    import copy
    adapter_kw = copy.deepcopy(dict(PLAIN_KW, **ADAPTER_KW))
    adapter = UpAdapter(**adapter_kw)
    adapter.ad_norm1, adapter.ad_norm2, adapter.ad_norm3, adapter.ad_norm4 = (
        nn.BatchNorm2d(32) for _ in range(4))  # SyncBatchNorm needs a process group
    adapter.eval()
    perturb(adapter)
    adapter_inputs = [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 96)]
    with torch.no_grad():
        adapter_outs = [[o.clone() for o in adapter(x)] for x in adapter_inputs]

    mixer = sys.modules['mmcls.plain_mamba_dev.models.plain_mamba.plain_mamba_layer'].PlainMamba2D(
        d_model=8, d_state=2)
    orders = {hw: mixer.get_permute_order(hw) for hw in ORDER_SHAPES}

    counts = {}
    for arch in ('L1', 'L2', 'L3'):
        with torch.device('meta'):
            net = UpPlainMamba(arch=arch, final_norm=True)
        counts[arch] = sum(prm.numel() for prm in net.parameters())

    def prefixed(m):
        return {'backbone.' + k: v for k, v in m.state_dict().items()}

    torch.save({
        'plain': dict(state_dict=prefixed(plain), inputs=plain_inputs, outs=plain_outs,
                      upstream_kwargs=PLAIN_KW),
        'adapter': dict(state_dict=prefixed(adapter), inputs=adapter_inputs,
                        outs=adapter_outs, upstream_kwargs=adapter_kw),
        'counts': counts, 'orders': orders,
        'note': 'ChenhongyiYang/PlainMamba PlainMamba and PlainMambaAdapter (detection), '
                'tiny test arch, perturbed weights; selective_scan_naive, mmcv PyTorch '
                'deformable attention; outputs NCHW'}, args.out)
    print('wrote', args.out, counts)


if __name__ == '__main__':
    main()
