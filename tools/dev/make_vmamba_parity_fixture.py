#!/usr/bin/env python
"""Regenerate tests/data/vmamba_upstream_test_arch.pth from an upstream VMamba checkout.

    python tools/dev/make_vmamba_parity_fixture.py --vmamba-repo /path/to/VMamba

Builds upstream's ``Backbone_VSSM`` (classification/models/vmamba.py, forward
type v05_noz, ln2d, downsample v3, patch embed v2) at a tiny size, perturbs
its weights randomly, runs it on CPU (upstream's torch scan paths) and saves
its state dict, the input and its four feature maps.  The test
``tests/test_vmamba.py::test_upstream_parity`` then checks that our converter
+ model reproduce those features.  Upstream code is imported from the given
checkout, never copied here; its optional imports (timm, fvcore, einops) are
replaced by small stand-ins that do not take part in the forward pass.
"""
import argparse
import os.path as osp
import sys
import types

import torch
import torch.nn as nn


def stub_optional_deps():
    class DropPath(nn.Module):  # eval only: identity

        def __init__(self, p=0.):
            super().__init__()
            self.drop_prob = p

        def forward(self, x):
            return x

    layers = types.ModuleType('timm.models.layers')
    layers.DropPath = DropPath
    layers.trunc_normal_ = lambda t, std=1.: nn.init.trunc_normal_(t, std=std)
    fvnn = types.ModuleType('fvcore.nn')
    for n in ('FlopCountAnalysis', 'flop_count_str', 'flop_count', 'parameter_count'):
        setattr(fvnn, n, None)
    einops = types.ModuleType('einops')
    einops.rearrange = einops.repeat = None
    sys.modules.update({
        'timm': types.ModuleType('timm'), 'timm.models': types.ModuleType('timm.models'),
        'timm.models.layers': layers, 'fvcore': types.ModuleType('fvcore'),
        'fvcore.nn': fvnn, 'einops': einops
    })
    # upstream enters torch.cuda.device(x.device) even for CPU tensors
    torch.cuda.device = lambda *a, **k: __import__('contextlib').nullcontext()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--vmamba-repo', required=True)
    p.add_argument('--out', default='tests/data/vmamba_upstream_test_arch.pth')
    args = p.parse_args()
    stub_optional_deps()
    sys.path.insert(0, osp.join(args.vmamba_repo, 'classification', 'models'))
    import vmamba as upstream

    torch.manual_seed(0)
    ref = upstream.Backbone_VSSM(
        out_indices=(0, 1, 2, 3), pretrained=None, norm_layer='ln2d', depths=[1, 1, 2, 1],
        dims=16, ssm_d_state=1, ssm_ratio=1.0, ssm_dt_rank='auto', ssm_conv=3,
        ssm_conv_bias=False, forward_type='v05_noz', mlp_ratio=2.0, downsample_version='v3',
        patchembed_version='v2', drop_path_rate=0.0).eval()
    with torch.no_grad():
        for prm in ref.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
        x = torch.randn(2, 3, 64, 96)
        feats = [f.clone() for f in ref(x)]
    torch.save({'model': ref.state_dict(), 'input': x, 'features': feats,
                'note': 'upstream Backbone_VSSM, depths [1,1,2,1], dims 16, mlp 2.0'}, args.out)
    print('wrote', args.out)


if __name__ == '__main__':
    main()
