"""ViT-Adapter around our plain backbones (backbones/vit_adapter.py)."""
import os.path as osp

import pytest
import torch

import mmvisbackbones  # noqa: F401
from mmvisbackbones.backbones.vit_adapter import ViTAdapter, convert_vit_adapter_checkpoint

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'vrwkv_adapter_upstream_test_arch.pth')
TINY = dict(conv_inplane=16, n_points=4, deform_num_heads=4, deform_ratio=0.5,
            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], norm='syncbn')


def tiny_vrwkv_adapter(**kw):
    vit = dict(type='VisionRWKV', arch='test', pretrain_img_size=64, drop_path_rate=0.0)
    return ViTAdapter(vit, **{**TINY, **kw})


def test_upstream_parity():
    """Upstream Vision-RWKV's VRWKV_Adapter (fixture by
    tools/dev/make_vrwkv_adapter_parity_fixture.py; mmcv's PyTorch
    deformable attention in both), its detection checkpoint converted: the
    four outputs at 64x64 and 64x96 within 1e-5."""
    fx = torch.load(FIXTURE, weights_only=True)
    net = tiny_vrwkv_adapter()
    missing, unexpected = net.load_state_dict(
        convert_vit_adapter_checkpoint({'state_dict': fx['state_dict']}, net), strict=True)
    assert not missing and not unexpected
    net.eval()
    with torch.no_grad():
        for x, ref in zip(fx['inputs'], fx['outs']):
            outs = net(x)
            assert len(outs) == 4
            for o, r in zip(outs, ref):
                torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('with_cp', [False, True])
def test_outputs_any_size_and_train_step(with_cp):
    torch.manual_seed(0)
    net = tiny_vrwkv_adapter(norm='bn', with_cp=with_cp)
    x = torch.randn(2, 3, 65, 97)
    outs = net(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(17, 25), (9, 13), (5, 7), (3, 4)]
    sum(o.mean() for o in outs).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    a = tiny_vrwkv_adapter(norm='ln2d')
    b = tiny_vrwkv_adapter(norm='ln2d', with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    w = [torch.randn(o.shape) for o in a(x)]
    for net in (a, b):
        sum((o * wi).sum() for o, wi in zip(net(x), w)).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_builds_from_a_config_and_checks_input():
    from mmengine.registry import MODELS
    net = MODELS.build(dict(type='ViTAdapter', backbone=dict(type='VisionRWKV', arch='test'),
                            **TINY))
    with pytest.raises(ValueError, match='H and W >= 32'):
        net(torch.randn(1, 3, 16, 64))


def test_layer_ids_for_lr_decay():
    net = tiny_vrwkv_adapter()
    assert net.layer_id('vit.stages.1.0.att.key.weight') == 2
    assert net.layer_id('vit.patch_embed.proj.weight') == 0
    assert net.layer_id('interactions.0.injector.gamma') == net.num_layers + 1


@pytest.mark.parametrize('kw,err,msg', [
    (dict(interaction_indexes=[[0, 1], [3, 3]]), ValueError, 'covering blocks 0..3'),
    (dict(norm='gn'), ValueError, "norm must be one of"),
    (dict(deform_ratio=0.3), ValueError, 'must be divisible by 4 heads'),
])
def test_bad_config(kw, err, msg):
    with pytest.raises(err, match=msg):
        tiny_vrwkv_adapter(**kw)


def test_refuses_non_plain_backbone():
    with pytest.raises(TypeError, match='must be a plain backbone'):
        ViTAdapter(dict(type='Swin', arch='test'), interaction_indexes=[[0, 1]])


def test_converter_names_unknown_keys():
    net = tiny_vrwkv_adapter()
    sd = dict(net.state_dict())
    sd['backbone.mystery.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='mystery'):
        convert_vit_adapter_checkpoint({'state_dict': {'backbone.' + k: v for k, v in
                                                       net.state_dict().items()} | {
            'backbone.mystery.weight': torch.zeros(1)}}, net)
