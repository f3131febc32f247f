#!/usr/bin/env python
"""Regenerate tests/data/biformer_upstream_test_arch.pth from a rayleizhu/BiFormer checkout.

    PYTHONPATH=/tmp/biformer_deps python tools/dev/make_biformer_parity_fixture.py \
        --biformer-repo /path/to/BiFormer

Imports upstream's classification ``BiFormer`` (models/biformer.py with
ops/bra_legacy.py) and the mmdet backbone ``BiFormer_mm``
(object_detection/models_mm/biformer_mm.py) from the checkout (never copied
here).  Their heavy imports are replaced by small stand-ins: fairscale's
``checkpoint_wrapper`` (identity; unused), timm's ``register_model``,
``DropPath`` (drop_path is 0), ``to_2tuple``, ``trunc_normal_``, ``_cfg`` and
``LayerNorm2d`` (timm's: a channel LayerNorm with eps 1e-6), mmdet's
registry/logger and mmcv_custom's ``load_checkpoint`` (unused: no pretrained).
``einops`` is the real package: install it outside the project venv, e.g.
``pip install --no-deps --target /tmp/biformer_deps einops``.

Builds a tiny model (dims 8/16/24/32, depths 1/1/2/1, n_win 3, topks
1/3/9/-2 -- routed to one region, to some, to all nine, and global
attention -- head_dim 4, MLP ratio 2, auto_pad), perturbs its weights and BN
statistics, and saves: the classification model's state dict (10-class
head; the same trunk weights as the mm backbone), the mm backbone's
``extra_norms``, a (2, 3, 40, 68) input (padding at every routed stage:
10x17, 5x9, 3x5 maps with n_win 3) and upstream ``BiFormer_mm``'s four
features (through ``extra_norms``).
"""
import argparse
import importlib.util
import os.path as osp
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = dict(depth=[1, 1, 2, 1], embed_dim=[8, 16, 24, 32], mlp_ratios=[2, 2, 2, 2], n_win=3,
            kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1], topks=[1, 3, 9, -2],
            side_dwconv=5, before_attn_dwconv=3, layer_scale_init_value=-1,
            qk_dims=[8, 16, 24, 32], head_dim=4, param_routing=False, diff_routing=False,
            soft_routing=False, pre_norm=True, pe=None, auto_pad=True,
            use_checkpoint_stages=[], drop_path_rate=0.0)


def mod(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []  # importable as a package
    sys.modules[name] = m
    return m


class _LayerNorm2d(nn.LayerNorm):  # timm.models.layers.LayerNorm2d

    def __init__(self, num_channels, eps=1e-6, affine=True):
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _DropPath(nn.Module):

    def __init__(self, p=0.0):
        super().__init__()
        assert p == 0.0, 'stand-in DropPath: the fixture model uses drop_path_rate 0'

    def forward(self, x):
        return x


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--biformer-repo', required=True)
    p.add_argument('--out', default='tests/data/biformer_upstream_test_arch.pth')
    args = p.parse_args()
    repo = osp.abspath(args.biformer_repo)
    try:
        import einops  # noqa: F401
    except ImportError:
        sys.exit('einops is needed (real package): pip install --no-deps --target '
                 '/tmp/biformer_deps einops and put that folder on PYTHONPATH')

    mod('fairscale')
    mod('fairscale.nn')
    mod('fairscale.nn.checkpoint', checkpoint_wrapper=lambda m, *a, **k: m)
    mod('timm')
    mod('timm.models', register_model=lambda f: f)
    mod('timm.models.layers', DropPath=_DropPath, LayerNorm2d=_LayerNorm2d,
        to_2tuple=lambda x: (x, x), trunc_normal_=lambda t, std=1.0: nn.init.trunc_normal_(
            t, std=std))
    mod('timm.models.vision_transformer', _cfg=lambda **k: dict(k))
    mod('mmcv_custom', load_checkpoint=lambda *a, **k: None)
    reg = types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c))
    mod('mmdet')
    mod('mmdet.models')
    mod('mmdet.models.builder', BACKBONES=reg)
    mod('mmdet.utils', get_root_logger=lambda *a, **k: None)

    # upstream's packages: ops/ (bra_legacy) and models/ (biformer, _common)
    mod('ops')
    load_file('ops.bra_legacy', osp.join(repo, 'ops', 'bra_legacy.py'))
    mod('models')
    load_file('models._common', osp.join(repo, 'models', '_common.py'))
    cls_mod = load_file('models.biformer', osp.join(repo, 'models', 'biformer.py'))
    sys.modules['models_cls'] = sys.modules['models']
    sys.modules['models_cls.biformer'] = cls_mod
    mm_mod = load_file('upstream_biformer_mm',
                       osp.join(repo, 'object_detection', 'models_mm', 'biformer_mm.py'))

    torch.manual_seed(0)
    mm = mm_mod.BiFormer_mm(pretrained=None, **ARCH)
    mm.eval()  # (upstream's train() returns None)
    with torch.no_grad():
        for prm in mm.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
        for name, buf in mm.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(0.1 * torch.randn_like(buf))
            elif name.endswith('running_var'):
                buf.copy_(1 + 0.2 * torch.rand_like(buf))
    cls = cls_mod.BiFormer(num_classes=10, **ARCH).eval()
    missing, unexpected = cls.load_state_dict(mm.state_dict(), strict=False)
    assert set(missing) == {'norm.weight', 'norm.bias', 'norm.running_mean', 'norm.running_var',
                            'head.weight', 'head.bias'}, missing
    assert all(k.startswith('extra_norms.') for k in unexpected), unexpected

    x = torch.randn(2, 3, 40, 68)
    with torch.no_grad():
        features = [f.clone() for f in mm(x)]
    # the mm backbone's state dict = the classification one without norm.*/head.*,
    # plus extra_norms.* (saved apart to keep the file small)
    extra_norms = {k: v for k, v in mm.state_dict().items() if k.startswith('extra_norms.')}
    torch.save({'cls_state_dict': cls.state_dict(), 'extra_norms': extra_norms,
                'input': x, 'features': features, 'arch': ARCH,
                'note': 'rayleizhu/BiFormer BiFormer_mm / BiFormer (models/biformer.py, '
                        'ops/bra_legacy.py), dims 8-32, depths 1/1/2/1, n_win 3, topks '
                        '1/3/9/-2, head_dim 4, auto_pad, input 40x68; features through '
                        'extra_norms, NCHW'}, args.out)
    print('wrote', args.out, [tuple(f.shape) for f in features])


if __name__ == '__main__':
    main()
