#!/usr/bin/env python
"""Regenerate tests/data/mlla_upstream_test_arch.pth from a LeapLabTHU/MLLA checkout.

    python tools/dev/make_mlla_parity_fixture.py --mlla-repo /path/to/MLLA

Imports two upstream models from the checkout (never copied here), with
their missing imports replaced by small stand-ins:

* ``models/mlla.py`` (classification ``MLLA``): timm 0.4's ``DropPath``,
  ``to_2tuple``, ``trunc_normal_``;
* ``downstream/detection/mmdet/models/backbones/mlla.py`` (the dense
  backbone with per-stage ``norm{i}`` and RoPE recomputed per input size):
  additionally mmdet 2's ``BACKBONES`` registry, ``get_root_logger`` and
  mmcv 1's ``_load_checkpoint``, loaded as a module of a stand-in package so
  that its relative imports resolve.

Builds a tiny classification model (embed 4, depths 1/1/2/1, heads 1/1/2/2,
mlp ratio 2, 10 classes) for a 64x64 input, perturbs every parameter and
BatchNorm statistic, rounds them to fp16-representable values (so the
fixture can store them as fp16 and stay small while both sides compute in
fp32 with identical weights), and saves:

* ``model``: the classification state dict as released checkpoints hold it
  (head, final norm, ``attn.rope.rotations`` buffers included);
* ``det_norms``: perturbed ``norm{i}`` of the dense backbone;
* ``cls_input`` (64x64, the only size upstream's classification RoPE
  supports) and ``cls_features``: the output of each stage's last block
  (before patch merging, no norm), NCHW;
* ``det_input`` (45x71: odd, non-square, exercises upstream's stem and
  patch-merging padding and its per-size RoPE) and ``det_features``:
  the dense backbone's four normed outputs.
"""
import argparse
import importlib.util
import os.path as osp
import sys
import types

import torch
import torch.nn as nn

ARCH = dict(embed_dim=4, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2], mlp_ratio=2.0)
IMG = 64
DET_SIZE = (45, 71)


def mod(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


class _DropPath(nn.Module):  # timm 0.4.12 DropPath (identity in eval)

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def _to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def _trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(t, mean, std, a, b)


def stub_imports():
    mod('timm')
    mod('timm.models')
    mod('timm.models.layers', DropPath=_DropPath, to_2tuple=_to_2tuple,
        trunc_normal_=_trunc_normal_)
    # the dense backbone: `from ..builder import BACKBONES`, `from ...utils
    # import get_root_logger`, `from mmcv.runner import _load_checkpoint`
    pkg = mod('_mlla_up')
    pkg.__path__ = []
    mod('_mlla_up.models').__path__ = []
    mod('_mlla_up.models.builder',
        BACKBONES=types.SimpleNamespace(register_module=lambda *a, **k: (lambda c: c)))
    mod('_mlla_up.models.backbones').__path__ = []
    mod('_mlla_up.utils', get_root_logger=lambda *a, **k: None)
    mod('mmcv')
    mod('mmcv.runner', _load_checkpoint=None)


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def load_upstream(repo):
    stub_imports()
    cls = load_file('_mlla_up_cls', osp.join(repo, 'models', 'mlla.py'))
    det = load_file('_mlla_up.models.backbones.mlla',
                    osp.join(repo, 'downstream', 'detection', 'mmdet', 'models', 'backbones',
                             'mlla.py'))
    return cls, det


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--mlla-repo', required=True)
    p.add_argument('--out', default='tests/data/mlla_upstream_test_arch.pth')
    p.add_argument('--count-params', action='store_true',
                   help="print upstream's parameter counts of MLLA-T/S/B and exit")
    args = p.parse_args()
    cls_mod, det_mod = load_upstream(args.mlla_repo)

    if args.count_params:
        for name, kw in (('T', dict(embed_dim=64, depths=[2, 4, 8, 4], num_heads=[2, 4, 8, 16])),
                         ('S', dict(embed_dim=64, depths=[3, 6, 21, 6], num_heads=[2, 4, 8, 16])),
                         ('B', dict(embed_dim=96, depths=[3, 6, 21, 6],
                                    num_heads=[3, 6, 12, 24]))):
            net = cls_mod.MLLA(**kw)
            print(f'MLLA-{name}', sum(p.numel() for p in net.parameters()))
        return

    torch.manual_seed(0)
    ref = cls_mod.MLLA(img_size=IMG, num_classes=10, drop_path_rate=0.0, **ARCH).eval()
    det = det_mod.MLLA(img_size=IMG, num_classes=10, drop_path_rate=0.0,
                       out_indices=(0, 1, 2, 3), **ARCH).eval()
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith('rope.rotations') or not t.is_floating_point():
                continue
            if name.endswith('running_var'):
                t.mul_(1 + 0.5 * torch.rand_like(t))
            else:
                t.add_(0.1 * torch.randn_like(t))
            t.copy_(t.half().float())
        det_norms = {}
        for i in range(4):
            norm = getattr(det, f'norm{i}')
            norm.weight.copy_((1 + 0.2 * torch.randn_like(norm.weight)).half().float())
            norm.bias.copy_((0.2 * torch.randn_like(norm.bias)).half().float())
            det_norms[f'norm{i}.weight'] = norm.weight.detach().clone()
            det_norms[f'norm{i}.bias'] = norm.bias.detach().clone()
        missing, unexpected = det.load_state_dict(ref.state_dict(), strict=False)
        assert sorted(missing) == sorted(det_norms), missing
        assert all(k.startswith(('norm.', 'head.')) for k in unexpected), unexpected

        # classification model at its one resolution: each stage's last block
        feats = []
        hooks = [layer.blocks[-1].register_forward_hook(
            lambda m, i, o, hw=(IMG // 4 // 2**s, ) * 2: feats.append(
                o.transpose(1, 2).reshape(o.shape[0], -1, *hw).clone()))
            for s, layer in enumerate(ref.layers)]
        x_cls = torch.randn(1, 3, IMG, IMG).half().float()
        ref(x_cls)
        for h in hooks:
            h.remove()
        assert len(feats) == 4
        x_det = torch.randn(1, 3, *DET_SIZE).half().float()
        det_feats = [o.clone() for o in det(x_det)]

    sd = {k: (v.half() if v.is_floating_point() and not k.endswith('rope.rotations') else v)
          for k, v in ref.state_dict().items()}
    torch.save({'model': sd, 'det_norms': {k: v.half() for k, v in det_norms.items()},
                'arch': dict(ARCH, img_size=IMG, num_classes=10),
                'cls_input': x_cls.half(), 'cls_features': feats,
                'det_input': x_det.half(), 'det_features': det_feats,
                'note': 'LeapLabTHU/MLLA models/mlla.py MLLA (cls, 64x64) and '
                        'downstream/detection MLLA backbone (45x71), embed 4, depths 1/1/2/1, '
                        'heads 1/1/2/2, mlp 2; float weights stored as fp16 (exact: they were '
                        'rounded to fp16 before the fp32 forward)'}, args.out)
    print('wrote', args.out, 'max |feature|', max(f.abs().max().item() for f in feats + det_feats))


if __name__ == '__main__':
    main()
