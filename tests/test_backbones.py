"""Zoo-wide contract tests: every registered backbone, at its 'test' arch."""
import math

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import mmvisbackbones
from mmvisbackbones import BACKBONES, ViTAdapter
from mmvisbackbones.utils import CheckpointMismatchError
from mmengine.registry import MODELS
from zoo import ZOO

NAMES = sorted(BACKBONES)


def build(name, **kw):
    cfg = dict(ZOO[name]['kwargs'], **kw)
    return BACKBONES[name](**cfg)


def test_every_registered_backbone_is_in_the_zoo():
    assert set(NAMES) == set(ZOO), 'add new backbones to tests/zoo.py'
    for name in NAMES:
        assert 'test' in BACKBONES[name].arch_zoo, f'{name} needs an arch "test"'


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [(32, 32), (65, 97), (224, 224)])
def test_shapes_and_strides(name, size):
    net = build(name).eval()
    H, W = size
    with torch.no_grad():
        outs = net(torch.randn(2, 3, H, W))
    assert isinstance(outs, tuple) and len(outs) == len(net.out_indices)
    assert net.out_strides == [4, 8, 16, 32]
    for o, c, s in zip(outs, net.out_channels, net.out_strides):
        assert o.shape == (2, c, math.ceil(H / s), math.ceil(W / s))
        assert torch.isfinite(o).all()
    info = net.feature_info
    assert [f['num_chs'] for f in info] == net.out_channels
    assert [f['reduction'] for f in info] == net.out_strides


@pytest.mark.parametrize('name', NAMES)
def test_out_indices_subset(name):
    net = build(name, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 64))
    assert len(outs) == 2 and net.out_strides == [8, 32]
    assert [o.shape[1] for o in outs] == net.out_channels
    with pytest.raises(ValueError, match='out_indices'):
        build(name, out_indices=(0, 7))


@pytest.mark.parametrize('name', NAMES)
def test_registry_build(name):
    net = MODELS.build(dict(type=name, **ZOO[name]['kwargs']))
    assert type(net) is BACKBONES[name]


@pytest.mark.parametrize('name', NAMES)
def test_frozen_stages(name):
    frozen = 2
    net = build(name, frozen_stages=frozen)
    frozen_mods = net.frozen_modules()
    assert net.patch_embed in frozen_mods and net.stages[1] in frozen_mods
    frozen_ids = {id(p) for m in frozen_mods for p in m.parameters()}
    frozen_ids |= {id(p) for p in net.frozen_params()}
    assert frozen_ids
    for p in net.parameters():
        assert p.requires_grad == (id(p) not in frozen_ids)
    net.train()  # must not unfreeze
    for m in frozen_mods:
        assert not m.training
        assert not any(p.requires_grad for p in m.parameters())
    assert net.stages[2].training
    # an optimiser step leaves the frozen part untouched
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    sum(o.mean() for o in net(torch.randn(2, 3, 64, 64))).backward()
    opt.step()
    after = net.state_dict()
    frozen_keys = {n for n, p in net.named_parameters() if id(p) in frozen_ids}
    assert frozen_keys
    for k in frozen_keys:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in after if k not in frozen_keys)


@pytest.mark.parametrize('name', NAMES)
def test_norm_eval(name):
    bn = ZOO[name]['bn']
    if bn is None:
        # no BatchNorm to freeze (LayerNorm-only model): norm_eval is accepted,
        # as mmdet configs set it, and changes nothing
        net = build(name, norm_eval=True).train()
        assert not any(isinstance(m, _BatchNorm) for m in net.modules())
        assert all(m.training for m in net.modules())
        ref = build(name, norm_eval=False, drop_path_rate=0.0).train()
        net = build(name, norm_eval=True, drop_path_rate=0.0).train()
        net.load_state_dict(ref.state_dict())
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(net(x), ref(x))
        return
    net = build(name, norm_eval=True, **bn)
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    assert bns
    net.train()
    assert all(not m.training for m in bns)
    stats = [m.running_mean.clone() for m in bns]
    net(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bns))
    # without norm_eval the statistics move
    net2 = build(name, norm_eval=False, **bn).train()
    bns2 = [m for m in net2.modules() if isinstance(m, _BatchNorm)]
    stats2 = [m.running_mean.clone() for m in bns2]
    net2(torch.randn(2, 3, 64, 64))
    assert any(not torch.equal(a, m.running_mean) for a, m in zip(stats2, bns2))


@pytest.mark.parametrize('name', NAMES)
def test_with_cp_same_outputs_and_grads(name):
    ref = build(name, drop_path_rate=0.0).train()
    cp = build(name, drop_path_rate=0.0, with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 48, 40)
    outs_ref, outs_cp = ref(x), cp(x)
    for a, b in zip(outs_ref, outs_cp):
        torch.testing.assert_close(a, b)
    sum((o**2).mean() for o in outs_ref).backward()
    sum((o**2).mean() for o in outs_cp).backward()
    for (n, p), q in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize('name', NAMES)
def test_training_step_reaches_every_parameter(name):
    net = build(name).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    outs = net(torch.randn(2, 3, 64, 48))
    loss = sum((o**2).mean() for o in outs)
    assert torch.isfinite(loss)
    loss.backward()
    for n, p in net.named_parameters():
        assert p.grad is not None, f'{n} received no gradient'
        assert torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in net.stages[0].parameters())
    opt.step()


@pytest.mark.parametrize('name', NAMES)
def test_bad_input_errors(name):
    net = build(name).eval()
    with pytest.raises(ValueError, match='3-channel.*got 2 channels'):
        net(torch.randn(1, 2, 64, 64))
    with pytest.raises(ValueError, match='>= 32.*31'):
        net(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        net(torch.randn(3, 64, 64))
    with pytest.raises(TypeError, match='floating-point'):
        net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match='unknown arch'):
        BACKBONES[name](arch='gigantic')


@pytest.mark.parametrize('name', NAMES)
def test_plain_pytorch_builder(name):
    cls = BACKBONES[name]
    net = mmvisbackbones.build_backbone(f'{cls.model_name}_test', out_indices=(2, 3))
    assert type(net) is cls and net.out_strides == [16, 32]
    with pytest.raises(ValueError, match='unknown backbone'):
        mmvisbackbones.build_backbone('nope_tiny')


@pytest.mark.parametrize('name', NAMES)
def test_bf16_autocast(name):
    """Mixed precision (CPU bf16 autocast): finite outputs and gradients."""
    net = build(name).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = net(x)
    assert all(torch.isfinite(o.float()).all() for o in outs)
    sum(o.float().mean() for o in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    # close to the fp32 result
    net.eval()
    with torch.no_grad():
        ref = net(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = net(x)
    for a, b in zip(ref, low):
        torch.testing.assert_close(b.float(), a, rtol=0.1, atol=0.15)


# ------------------------------------------------- pretrained loading (any family)
@pytest.mark.parametrize('name', NAMES)
def test_loads_detector_checkpoint_of_this_plugin(name, tmp_path):
    """A mmdet/mmseg checkpoint of this plugin (``backbone.`` prefix, neck
    keys beside it, Runner meta) loads every backbone parameter back."""
    src = build(name)
    sd = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 1}}, ckpt)
    dst = build(name, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('container', ['state_dict', 'model'])
def test_checkpoint_without_matching_keys_is_a_clear_error(name, container, tmp_path):
    """A checkpoint of another model (ResNet keys) raises, naming its keys,
    instead of loading nothing silently."""
    ckpt = tmp_path / 'resnet.pth'
    torch.save({container: {'conv1.weight': torch.zeros(64, 3, 7, 7),
                            'layer1.0.bn1.weight': torch.zeros(64)}}, ckpt)
    net = build(name, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    with pytest.raises(CheckpointMismatchError, match='no parameter of checkpoint.*conv1.weight'):
        net.init_weights()


@pytest.mark.parametrize('name', NAMES)
def test_missing_or_remote_checkpoint_is_a_clear_error(name, tmp_path):
    net = build(name, init_cfg=dict(type='Pretrained',
                                    checkpoint=str(tmp_path / 'swin_tiny_patch4_window7_224.pth')))
    with pytest.raises(FileNotFoundError, match='swin_tiny_patch4_window7_224.pth'):
        net.init_weights()
    net = build(name, init_cfg=dict(type='Pretrained', checkpoint=''))
    with pytest.raises(ValueError, match='checkpoint'):
        net.init_weights()
    net = build(name, init_cfg=dict(type='Pretrained', checkpoint='https://x/y.pth'))
    with pytest.raises(ValueError, match='never downloads'):
        net.init_weights()


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('out_indices', [(0, ), (2, ), (0, 2), (1, 2, 3), (0, 1, 2, 3)])
def test_every_trainable_parameter_gets_a_gradient(name, out_indices):
    """What DistributedDataParallel's default (find_unused_parameters=False)
    needs: the stages after the last output, which the forward never runs,
    are frozen; every other parameter receives a gradient.  (An adapter's
    outputs all depend on every block: all its stages run and train.)"""
    net = build(name, out_indices=out_indices).train()
    sum(o.mean() for o in net(torch.randn(1, 3, 64, 64))).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]
    last = len(net.stages) - 1 if isinstance(net, ViTAdapter) else max(out_indices)
    for i, stage in enumerate(net.stages):
        assert all(p.requires_grad == (i <= last) for p in stage.parameters()), i
