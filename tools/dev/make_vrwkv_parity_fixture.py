#!/usr/bin/env python
"""Regenerate tests/data/vrwkv_upstream_test_arch.pth from an OpenGVLab/Vision-RWKV checkout.

    python tools/dev/make_vrwkv_parity_fixture.py --vrwkv-repo /path/to/Vision-RWKV

Imports upstream's ``VRWKV`` (classification/mmcls_custom/models/backbones/vrwkv.py,
never copied here) with its mmcv 1.x / mmcls imports replaced by small
stand-ins (BaseModule = nn.Module, mmcv's PatchEmbed = a strided conv named
``projection``, mmcls' bicubic ``resize_pos_embed``) and its CUDA WKV kernel,
compiled at import upstream, replaced by our ``bi_wkv_naive`` (checked against
upstream's CUDA source by tests/ops/test_ops_wkv.py).  Builds a tiny model
(embed 32, depth 4, post-norm, layer scale 1.0, key norm), perturbs its
weights, and saves its state dict, a 64x64 input and its outputs after each
layer (the last through upstream's final norm ``ln1``).
"""
import argparse
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F


def mod(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


class _PatchEmbed(nn.Module):  # mmcv.cnn.bricks.transformer.PatchEmbed, as VRWKV uses it

    def __init__(self, in_channels, input_size, embed_dims, conv_type, kernel_size, stride,
                 bias):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, bias=bias)
        self.init_out_size = (input_size // stride, input_size // stride)

    def forward(self, x):
        x = self.projection(x)
        return x.flatten(2).transpose(1, 2), x.shape[-2:]


class _BaseBackbone(nn.Module):  # mmcls' BaseBackbone(init_cfg)

    def __init__(self, init_cfg=None):
        super().__init__()


def _resize_pos_embed(pos, src, dst, mode='bicubic', num_extra_tokens=0):
    if tuple(src) == tuple(dst):
        return pos
    C = pos.shape[-1]
    g = pos.reshape(1, *src, C).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=tuple(dst), mode=mode, align_corners=False)
    return g.flatten(2).transpose(1, 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--vrwkv-repo', required=True)
    p.add_argument('--out', default='tests/data/vrwkv_upstream_test_arch.pth')
    args = p.parse_args()
    from mmvisbackbones.ops.wkv import bi_wkv_naive
    mod('mmcv')
    mod('mmcv.runner')
    mod('mmcv.runner.base_module', BaseModule=nn.Module, ModuleList=nn.ModuleList)
    mod('mmcv.cnn')
    mod('mmcv.cnn.bricks')
    mod('mmcv.cnn.bricks.transformer', PatchEmbed=_PatchEmbed)
    mod('mmcls')
    mod('mmcls.models')
    mod('mmcls.models.builder',
        BACKBONES=types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c)))
    mod('mmcls.models.utils', resize_pos_embed=_resize_pos_embed)
    mod('mmcls.models.backbones')
    mod('mmcls.models.backbones.base_backbone', BaseBackbone=_BaseBackbone)
    import torch.utils.cpp_extension as ext
    ext.load = lambda *a, **k: None  # upstream compiles its CUDA kernel at import
    sys.path.insert(0, args.vrwkv_repo + '/classification')
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'upstream_vrwkv',
        args.vrwkv_repo + '/classification/mmcls_custom/models/backbones/vrwkv.py')
    up = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(up)
    up.RUN_CUDA = lambda w, u, k, v: bi_wkv_naive(w, u, k, v)

    torch.manual_seed(0)
    ref = up.VRWKV(img_size=64, patch_size=16, embed_dims=32, depth=4, out_indices=[0, 1, 2, 3],
                   post_norm=True, init_values=1.0, key_norm=True, final_norm=True).eval()
    with torch.no_grad():
        for prm in ref.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        x = torch.randn(2, 3, 64, 64)
        outs = [o.clone() for o in ref(x)]
    torch.save({'state_dict': {'backbone.' + k: v for k, v in ref.state_dict().items()},
                'input': x, 'outs': outs,
                'note': 'OpenGVLab/Vision-RWKV VRWKV embed 32, depth 4, post_norm, '
                        'init_values 1.0, key_norm, img 64; outputs after each layer '
                        '(last through ln1), NCHW'}, args.out)
    print('wrote', args.out)


if __name__ == '__main__':
    main()
