#!/usr/bin/env python
"""Regenerate tests/data/vrwkv_adapter_upstream_test_arch.pth from an
OpenGVLab/Vision-RWKV checkout (its detection code: ``VRWKV_Adapter``,
``adapter_modules.py`` and the ``ops/modules/ms_deform_attn.py`` it ships,
never copied here).

    python tools/dev/make_vrwkv_adapter_parity_fixture.py --vrwkv-repo /path/to/Vision-RWKV

Upstream's mmcv 1.x / mmdet 2.x imports are replaced by small stand-ins
(BaseModule = an nn.Module taking init_cfg, mmcv's PatchEmbed = a strided conv named
``projection``, a no-op registry and logger), timm's DropPath /
trunc_normal_ by PyTorch equivalents, its compiled CUDA WKV kernel by our
``bi_wkv_naive`` (checked against upstream's CUDA source by
tests/ops/test_ops_wkv.py) and its compiled deformable-attention function by
mmcv 2.1's PyTorch ``multi_scale_deformable_attn_pytorch`` (the same
``grid_sample`` formula as upstream's own ``ms_deform_attn_core_pytorch``).

Builds a tiny adapter (embed 32, depth 4, post-norm, layer scale 1.0, key
norm; SPM width 16, 4 deformable heads, deform ratio 0.5, an interaction
block per layer, extra extractors, tokens added at all scales), perturbs
every weight and the BN statistics, and saves the state dict (``backbone.``
prefix, as in upstream's detection checkpoints), two inputs (64x64 and
64x96) and upstream's four outputs for each.
"""
import argparse
import os.path as osp
import sys
import types

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_vrwkv_parity_fixture import _PatchEmbed, mod  # noqa: E402  (the shared stand-ins)


class _BaseModule(nn.Module):  # mmcv.runner.BaseModule(init_cfg)

    def __init__(self, init_cfg=None):
        super().__init__()


class _DropPath(nn.Module):  # timm.models.layers.DropPath (identity in eval)

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        from mmvisbackbones.layers import drop_path
        return drop_path(x, self.drop_prob, self.training)


class _MSDeformAttnFunction:  # upstream's compiled op -> mmcv's PyTorch path

    @staticmethod
    def apply(value, shapes, level_start_index, locations, weights, im2col_step):
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
        return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)


def install_stand_ins(repo):
    from mmvisbackbones.ops.wkv import bi_wkv_naive
    import mmcv.ops.multi_scale_deform_attn  # noqa: F401  (the real mmcv, before the stubs)
    registry = types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c))
    mod('mmcv.runner', load_checkpoint=None)
    mod('mmcv.runner.base_module', BaseModule=_BaseModule, ModuleList=nn.ModuleList)
    mod('mmcv.cnn.bricks.transformer', PatchEmbed=_PatchEmbed)
    mod('mmdet')
    mod('mmdet.models')
    mod('mmdet.models.builder', BACKBONES=registry)
    import logging
    mod('mmdet.utils', get_root_logger=lambda *a, **k: logging.getLogger('upstream'))
    mod('timm')
    mod('timm.models')
    mod('timm.models.layers', DropPath=_DropPath, trunc_normal_=nn.init.trunc_normal_)
    ops = mod('ops')
    ops.__path__ = [osp.join(repo, 'detection', 'ops')]
    mod('ops.functions', MSDeformAttnFunction=_MSDeformAttnFunction)
    import torch.utils.cpp_extension as ext
    ext.load = lambda *a, **k: None  # upstream compiles its CUDA kernel at import
    sys.path.insert(0, osp.join(repo, 'detection'))
    import mmdet_custom.models.backbones.base.vrwkv as base
    base.RUN_CUDA = lambda w, u, k, v: bi_wkv_naive(w, u, k, v)
    from mmdet_custom.models.backbones.vrwkv_adapter import VRWKV_Adapter
    return VRWKV_Adapter


#: the tiny adapter, in upstream's argument names
UPSTREAM_KW = dict(img_size=64, patch_size=16, embed_dims=32, depth=4, post_norm=True,
                   init_values=1.0, key_norm=True, drop_path_rate=0.0, conv_inplane=16,
                   n_points=4, deform_num_heads=4, init_values_inject=0.0,
                   interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], with_cffn=True,
                   cffn_ratio=0.25, deform_ratio=0.5, add_rwkv_feature=True,
                   use_extra_extractor=True, pretrain_size=64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--vrwkv-repo', required=True)
    p.add_argument('--out', default='tests/data/vrwkv_adapter_upstream_test_arch.pth')
    args = p.parse_args()
    VRWKV_Adapter = install_stand_ins(osp.abspath(args.vrwkv_repo))
    torch.manual_seed(0)
    ref = VRWKV_Adapter(**UPSTREAM_KW).eval()
    with torch.no_grad():
        for prm in ref.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        inputs = [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 96)]
        outs = [[o.clone() for o in ref(x)] for x in inputs]
    torch.save({'state_dict': {'backbone.' + k: v for k, v in ref.state_dict().items()},
                'inputs': inputs, 'outs': outs, 'upstream_kwargs': UPSTREAM_KW,
                'note': 'OpenGVLab/Vision-RWKV VRWKV_Adapter (detection), tiny test arch; '
                        'mmcv PyTorch deformable attention, bi_wkv_naive'}, args.out)
    print('wrote', args.out, [[tuple(o.shape) for o in os_] for os_ in outs])


if __name__ == '__main__':
    main()
