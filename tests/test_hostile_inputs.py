"""Bad input gets an error that names the problem, and nothing is half-loaded:
broken checkpoint files, checkpoints of another arch, size or family, a
backbone checkpoint given to a whole detector, wrong custom arch dicts,
out-of-range out_indices and misspelled config arguments; and the feature
contract holds for random sizes, batches and out_indices subsets."""
import os.path as osp
import random
import subprocess
import sys

import pytest
import torch
from mmengine.registry import MODELS

from mm_helpers import ROOT, write_demo_cfg
from zoo import ZOO
from mmvisbackbones import BACKBONES
from mmvisbackbones.engine.runner import check_model_checkpoint
from mmvisbackbones.utils import CheckpointMismatchError
from mmvisbackbones.utils.checkpoint import CheckpointReadError, load_checkpoint_file

NAMES = sorted(BACKBONES)


def pretrained(path):
    return dict(type='Pretrained', checkpoint=str(path))


def build(name, **kw):
    return BACKBONES[name](**{**ZOO[name]['kwargs'], **kw})


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def unchanged(net, before):
    return all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.fixture(scope='module')
def swin_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpts')
    torch.manual_seed(0)
    torch.save({'state_dict': build('Swin').state_dict()}, d / 'swin_test.pth')
    return d


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_broken_checkpoint_file_is_named_and_nothing_loads(swin_ckpt, damage):
    data = (swin_ckpt / 'swin_test.pth').read_bytes()
    bad = swin_ckpt / f'{damage}.pth'
    bad.write_bytes({'truncated': data[:len(data) // 2], 'garbage': b'not a checkpoint' * 64,
                     'empty': b''}[damage])
    net = build('Swin', init_cfg=pretrained(bad))
    before = snapshot(net)
    with pytest.raises(CheckpointReadError, match='truncated, corrupted or not a torch ch') as e:
        net.init_weights()
    assert str(bad) in str(e.value) and f'({bad.stat().st_size} bytes)' in str(e.value)
    assert unchanged(net, before)


def test_checkpoint_of_another_arch_size_names_the_mismatch_and_its_arch(tmp_path):
    torch.save(BACKBONES['Swin'](arch='tiny').state_dict(), tmp_path / 'tiny.pth')
    net = build('Swin', init_cfg=pretrained(tmp_path / 'tiny.pth'))
    before = snapshot(net)
    with pytest.raises(CheckpointMismatchError) as e:
        net.init_weights()
    msg = str(e.value)
    assert "does not fit Swin (arch 'test')" in msg and 'shape mismatches' in msg
    assert 'checkpoint (96,) vs model (16,)' in msg  # a mismatch, both shapes
    assert "It looks like Swin arch 'tiny'" in msg
    assert unchanged(net, before)


def test_checkpoint_of_another_family_names_the_family(tmp_path):
    torch.save(build('VMamba').state_dict(), tmp_path / 'vmamba.pth')
    net = build('Swin', init_cfg=pretrained(tmp_path / 'vmamba.pth'))
    before = snapshot(net)
    with pytest.raises(CheckpointMismatchError) as e:
        net.init_weights()
    assert "It looks like VMamba arch 'test'" in str(e.value)
    assert 'Nothing was loaded' in str(e.value) and unchanged(net, before)


def test_non_strict_loading_is_explicit(tmp_path):
    torch.save({k: v + torch.rand_like(v) if v.is_floating_point() else v
                for k, v in build('VMamba').state_dict().items()}, tmp_path / 'vmamba.pth')
    net = build('Swin', init_cfg=dict(pretrained(tmp_path / 'vmamba.pth'), strict=False))
    before = snapshot(net)
    net.init_weights()  # loads what fits, logs the rest
    assert not unchanged(net, before)


def test_detector_checkpoint_for_a_backbone_takes_its_backbone(tmp_path):
    src = build('Swin')
    det = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    det['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 16, 1, 1)
    torch.save({'state_dict': det, 'meta': {'epoch': 12}}, tmp_path / 'det.pth')
    net = build('Swin', init_cfg=pretrained(tmp_path / 'det.pth'))
    net.init_weights()
    assert all(torch.equal(src.state_dict()[k], v) for k, v in net.state_dict().items())


class _Detector(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = build('Swin')
        self.neck = torch.nn.Conv2d(16, 4, 1)


def test_backbone_checkpoint_for_a_detector_is_refused_with_the_fix(tmp_path):
    det = _Detector()
    with pytest.raises(RuntimeError, match='is a backbone checkpoint') as e:
        check_model_checkpoint(det, {'state_dict': det.backbone.state_dict()}, 'bb.pth')
    assert "model.backbone.init_cfg=dict(type='Pretrained'" in str(e.value)
    with pytest.raises(RuntimeError, match='no tensor of'):
        check_model_checkpoint(det, {'state_dict': {'foo.weight': torch.zeros(1)}}, 'x.pth')
    check_model_checkpoint(det, {'state_dict': det.state_dict()}, 'det.pth')  # fits


@pytest.fixture(scope='module')
def tools_workspace(tmp_path_factory):
    from mmvisbackbones.datasets import make_coco_demo
    ws = tmp_path_factory.mktemp('hostile_tools')
    make_coco_demo(str(ws / 'coco'), num_train=2, num_val=2)
    write_demo_cfg(ws / 'cfg.py', 'maskrcnn', ws / 'coco')
    return ws


@pytest.mark.parametrize('case', ['truncated', 'backbone_only'])
def test_test_tool_refuses_checkpoints_that_would_load_nothing(tools_workspace, case):
    ws = tools_workspace
    from mmengine.config import Config
    bb_cfg = Config.fromfile(str(ws / 'cfg.py')).model.backbone
    bb = MODELS.build(bb_cfg)
    path = ws / f'{case}.pth'
    torch.save({'state_dict': bb.state_dict()}, path)
    if case == 'truncated':
        path.write_bytes(path.read_bytes()[:1000])
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(ws / 'cfg.py'),
                        str(path), '--work-dir', str(ws / 'work')], cwd=ws,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    expect = 'could not be read' if case == 'truncated' else 'is a backbone checkpoint'
    assert expect in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize('name', NAMES)
def test_custom_arch_dict_with_wrong_types_or_keys(name):
    cls = BACKBONES[name]
    good = dict(cls.arch_zoo['test'])
    cls.resolve_arch(good)  # the table's own entries pass
    key = next(k for k, v in good.items() if type(v) in (list, tuple, int))
    with pytest.raises(TypeError, match=f"custom arch '{key}' must be"):
        cls(arch={**good, key: 'oops'})
    int_key = next((k for k, v in good.items() if type(v) is int), None)
    if int_key is not None:
        with pytest.raises(TypeError, match=f"custom arch '{int_key}' must be"):
            cls(arch={**good, int_key: 2.5})
    with pytest.raises(ValueError, match="unknown keys 'typo_key'"):
        cls(arch={**good, 'typo_key': 1})


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('bad', [(0, 4), (-1, ), (2, 1), (1, 1)])
def test_out_indices_out_of_range_or_unordered(name, bad):
    with pytest.raises(ValueError, match='out_indices'):
        build(name, out_indices=bad)


@pytest.mark.parametrize('name', NAMES)
def test_misspelled_config_argument_lists_the_valid_ones(name):
    with pytest.raises(TypeError) as e:
        MODELS.build(dict(type=name, **ZOO[name]['kwargs'], out_indice=(0, 1)))
    msg = str(e.value)
    assert "unknown argument 'out_indice' (did you mean 'out_indices'?)" in msg
    assert 'valid arguments are' in msg and 'frozen_stages' in msg


@pytest.mark.parametrize('name', NAMES)
def test_contract_holds_for_random_sizes_batches_and_subsets(name):
    """Property-style: random H, W from the minimum input size to 300, batch
    1 to 3 and random out_indices subsets (seeded, so a failure repeats):
    one output per index, channels and strides as declared, each map
    ceil(H / stride) x ceil(W / stride)."""
    rng = random.Random(f'contract-{name}')
    cls = BACKBONES[name]
    for _ in range(6):
        k = rng.randint(1, 4)
        out_indices = tuple(sorted(rng.sample(range(4), k)))
        net = build(name, out_indices=out_indices).eval()
        lo = net.min_input_size
        B, H, W = rng.randint(1, 3), rng.randint(lo, 300), rng.randint(lo, 300)
        with torch.no_grad():
            outs = net(torch.randn(B, 3, H, W))
        assert len(outs) == len(out_indices), (out_indices, H, W)
        for o, c, s in zip(outs, net.out_channels, net.out_strides):
            assert o.shape == (B, c, -(-H // s), -(-W // s)), (cls.__name__, out_indices, B, H,
                                                              W, s, tuple(o.shape))
            assert torch.isfinite(o).all()


def test_load_checkpoint_file_still_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
