"""VMamba specifics: upstream parity, the checkpoint converter, pretrained loading."""
import os.path as osp

import pytest
import torch

from mmvisbackbones import VMamba, build_backbone, convert_vmamba_checkpoint

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'vmamba_upstream_test_arch.pth')
FIXTURE_ARCH = dict(depths=(1, 1, 2, 1), dims=16, ssm_ratio=1.0, d_state=1, mlp_ratio=2.0,
                    drop_path_rate=0.0)


def upstream_keys(depths, with_head=True):
    """Key names of an upstream MzeroMiko/VMamba v2 classification checkpoint
    (VSSM, v05_noz, ln2d, downsample v3, patch embed v2), written out by hand."""
    keys = [f'patch_embed.{i}.{p}' for i in (0, 2, 5, 7) for p in ('weight', 'bias')]
    for i, depth in enumerate(depths):
        for j in range(depth):
            b = f'layers.{i}.blocks.{j}.'
            keys += [b + 'norm.weight', b + 'norm.bias', b + 'op.in_proj.weight',
                     b + 'op.conv2d.weight', b + 'op.x_proj_weight', b + 'op.dt_projs_weight',
                     b + 'op.dt_projs_bias', b + 'op.A_logs', b + 'op.Ds',
                     b + 'op.out_norm.weight', b + 'op.out_norm.bias', b + 'op.out_proj.weight',
                     b + 'norm2.weight', b + 'norm2.bias', b + 'mlp.fc1.weight', b + 'mlp.fc1.bias',
                     b + 'mlp.fc2.weight', b + 'mlp.fc2.bias']
        if i < len(depths) - 1:
            keys += [f'layers.{i}.downsample.{k}.{p}' for k in (1, 3) for p in ('weight', 'bias')]
    if with_head:
        keys += ['classifier.norm.weight', 'classifier.norm.bias', 'classifier.head.weight',
                 'classifier.head.bias']
    return keys


def test_upstream_parity():
    """A converted upstream checkpoint gives upstream's features (fixture made by
    upstream's own Backbone_VSSM, see tools/dev/make_vmamba_parity_fixture.py)."""
    fx = torch.load(FIXTURE, weights_only=True)
    net = VMamba(arch=FIXTURE_ARCH).eval()
    sd = convert_vmamba_checkpoint(fx['model'])
    net.load_state_dict(sd, strict=True)  # every key maps, none left over
    with torch.no_grad():
        feats = net(fx['input'])
    assert len(feats) == len(fx['features']) == 4
    for ours, ref in zip(feats, fx['features']):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_upstream_parity_through_init_cfg(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True)
    # as released: classification checkpoint under 'model' with the head
    ckpt = tmp_path / 'vssm_cls.pth'
    torch.save({'model': fx['model'], 'epoch': 3}, ckpt)
    net = VMamba(arch=FIXTURE_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        feats = net.eval()(fx['input'])
    for ours, ref in zip(feats, fx['features']):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_converter_maps_every_upstream_key(arch):
    depths = VMamba.arch_zoo[arch]['depths']
    with torch.device('meta'):
        net = VMamba(arch=arch)
    own = net.state_dict()
    converted = convert_vmamba_checkpoint({k: torch.empty(0) for k in upstream_keys(depths)})
    assert not any(k.startswith('classifier') for k in converted)
    own_no_outnorm = {k for k in own if not k.startswith('norm')}
    assert set(converted) == own_no_outnorm
    # an mmdet/mmseg checkpoint of upstream's MM_VSSM (prefix stripped): outnorms too
    mm = upstream_keys(depths, with_head=False) + [
        f'outnorm{i}.{p}' for i in range(4) for p in ('weight', 'bias')]
    assert set(convert_vmamba_checkpoint({k: torch.empty(0) for k in mm})) == set(own)
    # our own keys pass through unchanged
    assert set(convert_vmamba_checkpoint({k: torch.empty(0) for k in own})) == set(own)


@pytest.mark.parametrize('arch,upstream_m', [('tiny', 30), ('small', 50), ('base', 89)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """Upstream reports 30M / 50M / 89M for the classification models
    (backbone + final norm + 1000-class head)."""
    with torch.device('meta'):
        net = VMamba(arch=arch, out_indices=(3, ))
    c = net.num_features[-1]
    n = sum(p.numel() for p in net.parameters()) + (c * 1000 + 1000)  # head; norm3 = cls norm
    assert round(n / 1e6) == upstream_m, n
    assert VMamba.classification_params(arch) == n  # what the README table shows


def test_checkpoint_with_code_is_refused(tmp_path):
    ckpt = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'obj': torch.nn.ReLU()}, ckpt)
    net = build_backbone('vmamba_test', init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    with pytest.raises(RuntimeError, match='allow-list'):
        net.init_weights()


def test_partial_checkpoint_reports_missing_keys(tmp_path):
    from mmengine.logging import MMLogger
    src = build_backbone('vmamba_test').state_dict()
    sd = {k: v for k, v in src.items() if k.startswith('patch_embed')}
    ckpt = tmp_path / 'partial.pth'
    torch.save(sd, ckpt)
    from mmvisbackbones.utils import CheckpointMismatchError, load_pretrained
    net = build_backbone('vmamba_test')
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # by default a checkpoint that covers only part of the model is refused,
    # before anything is loaded
    with pytest.raises(CheckpointMismatchError, match='tensors missing from it') as err:
        load_pretrained(net, str(ckpt), converter=VMamba.convert_checkpoint)
    assert 'stages.0.blocks.0.norm1.weight' in str(err.value)
    assert 'Nothing was loaded' in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # strict=False loads what fits and reports the rest
    report = load_pretrained(net, str(ckpt), converter=VMamba.convert_checkpoint,
                             logger=MMLogger.get_instance('test_partial'), strict=False)
    assert set(report['loaded']) == set(sd)
    assert 'stages.0.blocks.0.ssm.A_log' in report['missing']


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU check of the interpreted kernels')
def test_triton_backend_gives_the_same_model(monkeypatch):
    """The whole backbone through the fused Triton SS2D kernels (interpreted on
    the CPU) equals the chunked torch path, forward and gradients."""
    import os
    if os.environ.get('TRITON_INTERPRET') != '1':
        pytest.skip('needs TRITON_INTERPRET=1 (set by tests/conftest.py)')
    net = build_backbone('vmamba_test', drop_path_rate=0.0)
    x = torch.randn(1, 3, 32, 40)
    res = {}
    for backend in ('torch', 'triton'):
        monkeypatch.setenv('MMVB_SCAN_BACKEND', backend)
        net.zero_grad()
        outs = net(x)
        sum((o * o).mean() for o in outs).backward()
        res[backend] = ([o.detach() for o in outs],
                        {n: p.grad.clone() for n, p in net.named_parameters()})
    for a, b in zip(res['torch'][0], res['triton'][0]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for n, g in res['torch'][1].items():
        torch.testing.assert_close(res['triton'][1][n], g, rtol=1e-3, atol=1e-4, msg=n)
