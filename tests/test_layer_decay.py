"""Layer-wise learning-rate decay (engine/layer_decay.py): the BEiT /
ViT-Adapter rule, checked against mmseg's implementation of it."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

import mmvisbackbones  # noqa: F401  (registers the constructor)
from mmvisbackbones import BACKBONES

PLAIN = [n for n, cls in BACKBONES.items() if hasattr(cls, 'layer_id')]
RATE, LR, WD = 0.85, 2e-4, 0.01


class Detector(nn.Module):
    """A backbone and a neck, named as mmdet / mmseg name them."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(backbone.embed_dims, 8, 1)


def build(model, **paramwise):
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
               constructor='LayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(layer_decay_rate=RATE, **paramwise))
    return build_optim_wrapper(model, cfg)


def test_the_plain_backbones_number_their_layers():
    assert set(PLAIN) >= {'Vim', 'VisionRWKV', 'PlainMamba', 'VisionRWKVAdapter'}


@pytest.mark.parametrize('name', PLAIN)
def test_layer_ids_are_mmseg_vit_ids(name):
    """Renamed to a ViT's ``backbone.layers.{i}``, every parameter gets the
    layer that mmseg's ``get_layer_id_for_vit`` (BEiT's rule, the one
    upstream Vision-RWKV and ViT-Adapter use) gives it."""
    from mmseg.engine.optimizers.layer_decay_optimizer_constructor import get_layer_id_for_vit
    bb = BACKBONES[name](arch='test')
    plain = getattr(bb, 'vit', bb)  # an adapter's plain model
    per = plain.depth // plain.num_stages
    seen = set()
    for pname, _ in bb.named_parameters():
        # an adapter's plain model sits under vit.; upstream's adapter classes
        # subclass the plain model, so the rule sees its names without it
        parts = pname[4:].split('.') if pname.startswith('vit.') else pname.split('.')
        vit = ('layers.%d.' % (int(parts[1]) * per + int(parts[2])) + '.'.join(parts[3:])
               if parts[0] == 'stages' else '.'.join(parts))
        ours = bb.layer_id(pname)
        assert ours == get_layer_id_for_vit('backbone.' + vit, bb.num_layers + 2), pname
        seen.add(ours)
    assert seen == set(range(plain.depth + 2))  # embeddings, every block, the outputs


@pytest.mark.parametrize('name', PLAIN)
def test_groups_follow_the_rule(name):
    model = Detector(BACKBONES[name](arch='test', frozen_stages=0))
    L = model.backbone.num_layers
    plain = 'backbone.vit.' if hasattr(model.backbone, 'vit') else 'backbone.'
    opt = build(model, num_layers=L).optimizer
    lr, wd = {}, {}
    for g in opt.param_groups:
        for p in g['params']:
            assert id(p) not in lr, 'a parameter in two groups'
            lr[id(p)], wd[id(p)] = g['lr'], g['weight_decay']
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen_stages=0: patch and position embeddings
            assert id(p) not in lr and pname.startswith((plain + 'patch_embed', plain + 'pos'))
            continue
        layer = model.backbone.layer_id(pname[9:]) if pname.startswith('backbone.') else L + 1
        assert lr[id(p)] == pytest.approx(LR * RATE**(L + 1 - layer)), pname
        assert wd[id(p)] == (0.0 if p.ndim == 1 or pname.endswith('.bias') else WD), pname
    first_block = next(p for n, p in model.named_parameters() if n.startswith(plain + 'stages.0.0.')
                       and p.ndim > 1)
    assert lr[id(first_block)] == pytest.approx(LR * RATE**L)
    assert lr[id(model.neck.weight)] == pytest.approx(LR)


def test_trains_through_a_scheduler():
    """The group lrs keep their ratios under an mmengine scheduler step."""
    from mmengine.optim import LinearLR
    model = Detector(BACKBONES['VisionRWKV'](arch='test'))
    wrapper = build(model)
    sched = LinearLR(wrapper, start_factor=0.5, by_epoch=False, begin=0, end=4)
    before = [g['lr'] for g in wrapper.optimizer.param_groups]
    out = model.neck(model.backbone(torch.randn(1, 3, 32, 32))[2]).sum()
    wrapper.update_params(out)
    sched.step()
    after = [g['lr'] for g in wrapper.optimizer.param_groups]
    ratios = [a / b for a, b in zip(after, before)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] != 1


@pytest.mark.parametrize('paramwise,err,msg', [
    (dict(), ValueError, r'layer_decay_rate must be a number in \(0, 1\], got None'),
    (dict(layer_decay_rate=1.5), ValueError, 'got 1.5'),
    (dict(layer_decay_rate=0.9, decay_type='stage_wise'), ValueError,
     r"keys \['decay_type'\] are not supported"),
    (dict(layer_decay_rate=0.9, num_layers=12), ValueError,
     'num_layers=12 but the backbone VisionRWKV has 4 layers'),
])
def test_bad_config(paramwise, err, msg):
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
               constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=paramwise)
    with pytest.raises(err, match=msg):
        build_optim_wrapper(Detector(BACKBONES['VisionRWKV'](arch='test')), cfg)


def test_backbone_without_layers_is_refused():
    model = nn.Module()
    model.backbone = BACKBONES['Swin'](arch='test')
    with pytest.raises(TypeError, match='numbers its layers.*got Swin'):
        build(model)
