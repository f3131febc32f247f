"""PlainMamba specifics: parity with upstream's own model and its ViT-Adapter
(fixture by tools/dev/make_plain_mamba_parity_fixture.py), the scan orders,
the converter, parameter counts, the stride-16 output option."""
import os.path as osp

import pytest
import torch

from mmvisbackbones import PlainMamba, build_backbone, convert_plain_mamba_checkpoint
from mmvisbackbones.backbones.plain_mamba import snake_orders
from mmvisbackbones.backbones.vit_adapter import ViTAdapter

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'plain_mamba_upstream_test_arch.pth')
ARCH = dict(PlainMamba.arch_zoo['test'], drop_path_rate=0.0)


@pytest.fixture(scope='module')
def fx():
    return torch.load(FIXTURE, weights_only=True)


def saved(tmp_path, state_dict):
    path = tmp_path / 'upstream.pth'
    torch.save({'state_dict': state_dict}, path)
    return dict(type='Pretrained', checkpoint=str(path))


def test_upstream_parity_through_init_cfg(fx, tmp_path):
    """Upstream's PlainMamba with outputs after every layer (its segmentation
    layout: norm_layer{i} and the final ln1), loaded from its checkpoint
    (``backbone.`` keys): our four stride-16 outputs (``pyramid='none'``)
    equal upstream's at 64x64 and at 75x101 (5x7 tokens: odd, non-square
    snake orders, padding after the stem, a resized position embedding)."""
    ref = fx['plain']
    net = PlainMamba(arch=ARCH, pretrain_img_size=64, pyramid='none',
                     init_cfg=saved(tmp_path, ref['state_dict']))
    net.init_weights()
    net.eval()
    with torch.no_grad():
        for x, outs in zip(ref['inputs'], ref['outs']):
            got = net(x)
            assert len(got) == len(outs) == 4
            for o, r in zip(got, outs):
                assert o.shape == r.shape
                torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_upstream_checkpoint_into_the_pyramid_model(fx, tmp_path):
    """The same checkpoint in the default (simple feature pyramid) model:
    everything but the pyramid loads; the stride-16 output is upstream's."""
    ref = fx['plain']
    net = PlainMamba(arch=ARCH, pretrain_img_size=64,
                     init_cfg=saved(tmp_path, ref['state_dict']))
    net.init_weights()
    with torch.no_grad():
        got = net.eval()(ref['inputs'][1])
    torch.testing.assert_close(got[2], ref['outs'][1][2], rtol=1e-5, atol=1e-5)
    assert [tuple(o.shape[-2:]) for o in got] == [(19, 26), (10, 13), (5, 7), (3, 4)]


def test_adapter_parity(fx, tmp_path):
    """Upstream's PlainMambaAdapter (detection), its checkpoint read by
    ViTAdapter's converter (``ad_norm1..4`` -> ``norm0..3``): the four
    outputs at 64x64 and 64x96 within 1e-5."""
    ref = fx['adapter']
    vit = dict(type='PlainMamba', arch=ARCH, pretrain_img_size=64)
    net = ViTAdapter(vit, conv_inplane=16, n_points=4, deform_num_heads=4, deform_ratio=0.5,
                     interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], norm='bn',
                     init_cfg=saved(tmp_path, ref['state_dict']))
    net.init_weights()
    net.eval()
    with torch.no_grad():
        for x, outs in zip(ref['inputs'], ref['outs']):
            for o, r in zip(net(x), outs):
                torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_snake_orders_are_upstreams(fx):
    """Orders, inverse orders and direction codes equal upstream's
    ``get_permute_order`` on grids with one row / column, odd and even sides."""
    for (H, W), (orders, inverse, directions) in fx['orders'].items():
        order, position, direction = snake_orders(H, W)
        assert order.tolist() == [list(o) for o in orders], (H, W)
        assert position.tolist() == [list(o) for o in inverse], (H, W)
        assert direction.tolist() == [list(d) for d in directions], (H, W)


@pytest.mark.parametrize('arch', ['l1', 'l2', 'l3'])
def test_parameter_counts_match_upstream(fx, arch):
    """Our trunk (patch embedding, position embedding, blocks, final norm)
    has exactly the parameters of upstream's model (counted by its own code
    in the fixture); the published sizes (7.3 / 25.7 / 50.5 M) are those
    counts without the classifier."""
    with torch.device('meta'):
        net = PlainMamba(arch=arch, out_indices=(3, ))
    trunk = sum(p.numel() for n, p in net.named_parameters() if not n.startswith('fpns.'))
    assert trunk == fx['counts'][arch.upper()]
    assert PlainMamba.classification_params(arch) == trunk  # what the README table shows
    assert PlainMamba.upstream_params[arch] == f'{int(trunk / 1e5) / 10}M'


def test_converter_maps_layers_and_norms():
    net = PlainMamba(arch=ARCH, pretrain_img_size=64, out_indices=(1, 3))
    sd = {'layers.2.mamba.D': torch.ones(64), 'norm_layer1.weight': torch.ones(32),
          'norm_layer0.weight': torch.ones(32), 'ln1.bias': torch.zeros(32),
          'head.fc.weight': torch.zeros(10, 32), 'pos_embed': torch.zeros(1, 16, 32)}
    out = convert_plain_mamba_checkpoint(sd, net)
    # norm_layer0 belongs to output 0, which this model does not return
    assert set(out) == {'stages.2.0.mamba.D', 'norm1.weight', 'norm3.bias', 'pos_embed'}
    # our own layout passes through (its norm1 is output 1's norm)
    assert convert_plain_mamba_checkpoint(net.state_dict(), net).keys() == \
        net.state_dict().keys()


def test_converter_errors_name_the_problem():
    net = PlainMamba(arch=dict(ARCH, depth=8), pretrain_img_size=64)
    with pytest.raises(ValueError, match='norm_layer2.*ends none'):
        convert_plain_mamba_checkpoint({'norm_layer2.weight': torch.ones(32)}, net)
    with pytest.raises(ValueError, match='square grid'):
        convert_plain_mamba_checkpoint({'pos_embed': torch.zeros(1, 15, 32)}, net)


def test_stride16_outputs_and_bad_pyramid():
    net = build_backbone('plainmamba_test', pyramid='none').eval()
    assert net.out_strides == [16] * 4 and not list(net.fpns.parameters())
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 65, 97))
    assert [tuple(o.shape[-2:]) for o in outs] == [(5, 7)] * 4
    with pytest.raises(ValueError, match="pyramid must be one of"):
        PlainMamba(arch='test', pyramid='fpn')


def test_bad_layers_with_dwconv():
    with pytest.raises(ValueError, match='layers_with_dwconv'):
        PlainMamba(arch=dict(ARCH, layers_with_dwconv=(4, )))
