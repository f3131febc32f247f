"""Vision-RWKV specifics: upstream parity through the converter, Q-Shift,
the converter's key handling, parameter counts."""
import os.path as osp

import pytest
import torch

from mmvisbackbones import VisionRWKV, build_backbone, convert_vision_rwkv_checkpoint
from mmvisbackbones.backbones.vision_rwkv import q_shift

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'vrwkv_upstream_test_arch.pth')


def token_outputs(net, x):
    tok, hw = net.patch_embed(x)
    tok = tok + net.pos_embed
    outs = []
    for i, stage in enumerate(net.stages):
        for blk in stage:
            tok = blk(tok, hw)
        outs.append(net.norm3(tok) if i == 3 else tok)
    return outs


def test_upstream_parity(tmp_path):
    """Upstream VRWKV's outputs after each layer (the last through its final
    norm ``ln1``), fixture by tools/dev/make_vrwkv_parity_fixture.py, loaded
    as an mmcls checkpoint through init_cfg."""
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'vrwkv.pth'
    torch.save({'state_dict': fx['state_dict'], 'meta': {}}, ckpt)
    net = VisionRWKV(arch='test', pretrain_img_size=64, drop_path_rate=0.0,
                     init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        outs = token_outputs(net.eval(), fx['input'])
    for ours, ref in zip(outs, fx['outs']):
        torch.testing.assert_close(ours, ref.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-4)


def test_converter_keys():
    net = VisionRWKV(arch='test', pretrain_img_size=64)
    sd = {'backbone_ignored': torch.zeros(1), 'patch_embed.projection.weight': torch.zeros(1),
          'layers.2.att.key.weight': torch.zeros(1), 'ln1.weight': torch.zeros(1),
          'head.fc.weight': torch.zeros(1), 'pos_embed': torch.randn(1, 14 * 14, 32)}
    out = convert_vision_rwkv_checkpoint(sd, net)
    assert set(out) == {'backbone_ignored', 'patch_embed.proj.weight',
                        'stages.2.0.att.key.weight', 'norm3.weight', 'pos_embed'}
    assert out['pos_embed'].shape == (1, 16, 32)  # resized 14x14 -> the model's 4x4 grid
    with pytest.raises(ValueError, match='square grid'):
        convert_vision_rwkv_checkpoint({'pos_embed': torch.zeros(1, 15, 32)}, net)


def test_q_shift_moves_quarters():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(1, 8, 6).transpose(1, 2)  # (1, 6, 8)
    hw = (2, 3)
    grid = x.transpose(1, 2).reshape(1, 8, 2, 3)
    out = q_shift(x, hw).transpose(1, 2).reshape(1, 8, 2, 3)
    assert torch.equal(out[:, 0:2, :, 1:], grid[:, 0:2, :, :-1])  # right
    assert torch.equal(out[:, 0:2, :, 0], torch.zeros(1, 2, 2))
    assert torch.equal(out[:, 2:4, :, :-1], grid[:, 2:4, :, 1:])  # left
    assert torch.equal(out[:, 4:6, 1:], grid[:, 4:6, :-1])  # down
    assert torch.equal(out[:, 6:8, :-1], grid[:, 6:8, 1:])  # up


@pytest.mark.parametrize('arch,upstream_m', [('tiny', 6.2), ('small', 23.8), ('base', 93.7),
                                             ('large', 334.9)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """Upstream: VRWKV-T 6.2M, S 23.8M, B 93.7M, L 334.9M (classifier
    included).  Trunk + final norm (our norm3) + upstream's head: a linear
    layer, or for models deeper than 12 layers Linear(C, 3072) -> Tanh ->
    Linear(3072, 1000) (classification_internimage/models/vrwkv.py).
    B lands at 93.646M, ~4.6k parameters under the rounding boundary of the
    printed 93.7 (counting details of upstream's table); hence +-0.06M."""
    with torch.device('meta'):
        net = VisionRWKV(arch=arch, out_indices=(3, ))
    C = net.embed_dims
    trunk = sum(p.numel() for n, p in net.named_parameters() if not n.startswith('fpns.'))
    head = C * 1000 + 1000 if net.depth <= 12 else C * 3072 + 3072 + 3072 * 1000 + 1000
    assert abs((trunk + head) / 1e6 - upstream_m) <= 0.06, trunk + head
    assert VisionRWKV.classification_params(arch) == trunk + head  # the README table's


def test_long_sequences_run():
    """Linear in the number of tokens: a 512x512 input (1024 tokens) on CPU."""
    net = build_backbone('vrwkv_test', out_indices=(2, )).eval()
    with torch.no_grad():
        (out, ) = net(torch.randn(1, 3, 512, 512))
    assert out.shape == (1, 32, 32, 32)


def test_layer_scale_of_one_loads_weights_without_one(tmp_path):
    """Upstream's VRWKV-T adapter recipes put a layer scale initialised to 1
    on the classification weights of a model without one: those load (the
    scales are optional only then, since a scale of 1 is no scale) and the
    model computes what the weights do; any other initial scale must come
    from the checkpoint."""
    from mmvisbackbones.utils import CheckpointMismatchError
    fx = torch.load(FIXTURE, weights_only=True)
    sd = {k: v for k, v in fx['state_dict'].items() if '.gamma' not in k}
    assert len(sd) < len(fx['state_dict'])
    ckpt = tmp_path / 'no_scale.pth'
    torch.save({'state_dict': sd, 'meta': {}}, ckpt)
    arch = dict(VisionRWKV.arch_zoo['test'])

    def build(init_values):
        torch.manual_seed(0)  # the same init for what the weights lack (pyramid, norms)
        net = VisionRWKV(arch=dict(arch, init_values=init_values), pretrain_img_size=64,
                         drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
        net.init_weights()
        return net.eval()

    x = fx['input']
    with torch.no_grad():
        ref, got = build(None)(x), build(1.0)(x)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointMismatchError, match='gamma'):
        build(1e-5)
