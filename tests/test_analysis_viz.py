"""tools/analysis/: ERF, feature maps and BiFormer routing, run as a user runs them
(subprocesses on tiny archs at 64 px), plus the ERF math and the routing capture."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from mm_helpers import ROOT

TOOLS = osp.join(ROOT, 'tools', 'analysis')
sys.path.insert(0, TOOLS)
import _common  # noqa: E402
import biformer_routing  # noqa: E402
import erf  # noqa: E402
import feature_maps  # noqa: E402


def run(args, ok=True):
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert (r.returncode == 0) == ok, out[-4000:]
    return out


def png_shape(path):
    import matplotlib.image as mpimg
    assert osp.getsize(path) > 0
    return mpimg.imread(path).shape[:2]


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    from PIL import Image
    a = np.zeros((48, 80, 3), np.uint8)
    a[10:30, 20:60] = (220, 40, 40)
    path = tmp_path_factory.mktemp('img') / 'im.png'
    Image.fromarray(a).save(path)
    return str(path)


def test_erf_two_models_side_by_side(tmp_path):
    out, js = str(tmp_path / 'erf.png'), str(tmp_path / 'erf.json')
    run([osp.join(TOOLS, 'erf.py'), '--model', 'vmamba_test', 'biformer_test', '--size', '64',
         '--num-images', '2', '--out', out, '--json', js])
    assert png_shape(out) == (round((erf.PANEL_IN * 2 + 0.3) * erf.DPI),
                              round(erf.PANEL_IN * 4 * erf.DPI))
    summary = json.load(open(js))
    assert [s['model'] for s in summary] == ['vmamba_test [random init]',
                                             'biformer_test [random init]']
    for s in summary:
        assert [st['stride'] for st in s['stages']] == [4, 8, 16, 32]
        for st in s['stages']:
            a = [st['area_ratio'][str(t)] for t in erf.THRESHOLDS]
            # a larger share of the total needs at least as large a square
            assert all(0 < v <= 1 for v in a) and a == sorted(a), st


class OneConv(torch.nn.Module):
    """Backbone-like: a single k x k conv (stride 1) as its only 'stage'."""

    def __init__(self, k):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, k, padding=k // 2)

    def forward(self, x):
        return (self.conv(x),)


@pytest.mark.parametrize('k', [3, 5])
def test_erf_of_one_conv_is_its_window(k):
    torch.manual_seed(0)
    net = OneConv(k)
    with torch.no_grad():
        net.conv.weight.abs_().add_(0.1)  # no weight sums to exactly zero over channels
        net.conv.bias.fill_(1.0)  # inputs >= 0: every output > 0, so the ReLU passes all
    raw, = erf.erf_maps(net, torch.rand(2, 3, 17, 17))
    inside = torch.zeros(17, 17, dtype=torch.bool)
    inside[8 - k // 2:8 + k // 2 + 1, 8 - k // 2:8 + k // 2 + 1] = True
    assert (raw[inside] > 0).all() and (raw[~inside] == 0).all()
    # gradient of sum_c relu(out_c) at the centre = sum_c W_c per position; |.| summed
    # over RGB, times 2 images
    expect = 2 * net.conv.weight.detach().sum(0).abs().sum(0)
    torch.testing.assert_close(raw[inside].view(k, k), expect)
    m = erf.normalise(raw)
    assert float(m.max()) == 1.0 and float(m.min()) == 0.0
    # all of the map lies in the k x k window: 99% of it needs at most that square
    # (side 3 at least, as RepLKNet's squares start at i = 1)
    assert erf.area_ratios(m)['0.99'] == max(k, 3) ** 2 / 17 ** 2


def test_area_ratio_is_replknets_smallest_centred_square():
    m = torch.zeros(9, 9)
    m[4, 4] = 1.0   # 1/4 of the total at the centre
    m[2, 6] = 3.0   # 3/4 two rows up, two columns right: the 5 x 5 square holds it
    r = erf.area_ratios(m)
    assert r['0.2'] == 9 / 81  # > 20% inside the 3 x 3 square (the centre pixel)
    assert r['0.3'] == r['0.5'] == r['0.99'] == 25 / 81
    assert erf.area_ratios(torch.zeros(5, 5))['0.5'] == 1.0


def test_feature_maps_png(image, tmp_path):
    out = str(tmp_path / 'fm.png')
    log = run([osp.join(TOOLS, 'feature_maps.py'), '--model', 'swin_test', '--image', image,
               '--size', '64', '--topk', '3', '--out', out])
    assert png_shape(out) == (round((feature_maps.PANEL_IN * 4 + 0.3) * feature_maps.DPI),
                              round(feature_maps.PANEL_IN * 5 * feature_maps.DPI))
    assert 'stage 3 (stride 32): top channels' in log


def test_feature_maps_topk_by_energy():
    f = torch.zeros(1, 5, 4, 4)
    f[0, 3] = 2.0
    f[0, 1] = -3.0  # negative but most energetic
    (mean, chans), = feature_maps.stage_summaries([f], topk=2)
    assert [c for c, _ in chans] == [1, 3]
    torch.testing.assert_close(mean, f[0].mean(0))


def test_routing_capture_matches_recomputation_and_keeps_outputs():
    from mmvisbackbones import build_backbone
    from mmvisbackbones.backbones.biformer import BiLevelRoutingAttention, _regions
    torch.manual_seed(0)
    net = build_backbone('biformer_test').eval()
    x = torch.randn(1, 3, 64, 64)
    seen = {}

    def grab(mod, inp, out):  # qkv output of each routed attention -> recompute routing
        seen.setdefault(mod, []).append(out.detach())
    attns = [m for m in net.modules() if isinstance(m, BiLevelRoutingAttention)]
    qkvs = [a.qkv for a in attns]
    hooks = [q.register_forward_hook(grab) for q in qkvs]
    with torch.no_grad():
        ref = net(x)
        with biformer_routing.RoutingRecorder(net) as rec:
            got = net(x)
    for h in hooks:
        h.remove()
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    assert all('route' not in vars(a) for a in attns)  # recorder removed itself
    assert rec.topks == {0: 1, 1: 2, 2: 4, 3: -2} and set(rec.records) == {0, 1, 2}
    flat = [idx for s in sorted(rec.records) for idx in rec.records[s]]
    assert len(flat) == len(attns)
    for a, q_lin, idx in zip(attns, qkvs, flat):
        q, k, _ = seen[q_lin][1].split([a.qk_dim, a.qk_dim, a.dim], dim=-1)
        logits = (_regions(q, a.n_win).mean(2) * a.scale) @ _regions(k, a.n_win).mean(2).mT
        assert idx.shape == (1, a.n_win ** 2, a.topk)
        assert torch.equal(idx, logits.topk(a.topk, dim=-1).indices)


def test_routing_png_and_global_stage(image, tmp_path):
    out = str(tmp_path / 'rt.png')
    log = run([osp.join(TOOLS, 'biformer_routing.py'), '--model', 'biformer_test', '--image',
               image, '--size', '64', '--point', '40', '10', '--out', out])
    assert png_shape(out) == (round((biformer_routing.PANEL_IN + 0.4) * biformer_routing.DPI),
                              round(biformer_routing.PANEL_IN * 4 * biformer_routing.DPI))
    assert 'stage 3: topk=-2: all regions (global attention)' in log
    assert 'stage 1: query region (0,1) routes to' in log


def test_clear_errors(image, tmp_path):
    assert "unknown model 'nope_tiny'" in run(
        [osp.join(TOOLS, 'erf.py'), '--model', 'nope_tiny', '--out', str(tmp_path / 'a.png')],
        ok=False)
    assert 'needs a BiFormer backbone, got Swin' in run(
        [osp.join(TOOLS, 'biformer_routing.py'), '--model', 'swin_test', '--image', image,
         '--size', '64', '--query', '0', '0', '--out', str(tmp_path / 'b.png')], ok=False)
    with pytest.raises(FileNotFoundError, match='image not found: /no/such.png'):
        _common.load_image('/no/such.png', 32)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        _common.build('swin_test', None, '/no/ckpt.pth', 'cpu')


def test_checkpoint_is_loaded_through_the_converter(tmp_path):
    """--checkpoint goes through init_cfg=Pretrained: the built model holds the
    file's weights (saved from another seed), not the tool's seeded init."""
    from mmvisbackbones import build_backbone
    torch.manual_seed(123)
    src = build_backbone('swin_test', out_indices=(0, 1, 2, 3))
    path = str(tmp_path / 'swin_test.pth')
    torch.save({'state_dict': src.state_dict()}, path)
    net, label = _common.build('swin_test', None, path, 'cpu')
    assert label == 'swin_test [swin_test.pth]'
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    rand, rand_label = _common.build('swin_test', None, None, 'cpu')
    assert rand_label == 'swin_test [random init]'
    assert any(not torch.equal(rand.state_dict()[k], v) for k, v in src.state_dict().items())
