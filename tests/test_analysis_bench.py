"""tools/analysis/get_flops.py and benchmark.py on the tiny demo configs
(VMamba Mask R-CNN / UperNet / small inputs) and a test backbone at 64 px: the
FLOPs split by module against hand-counted layers and count_flops, parameters
against the models', benchmark results and the tools' usage errors."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mm_helpers import DEMO_CONFIGS, ROOT

TOOLS = osp.join(ROOT, 'tools', 'analysis')
sys.path.insert(0, TOOLS)
import _whole_model  # noqa: E402
import benchmark  # noqa: E402
import get_flops  # noqa: E402

from mmvisbackbones.utils import count_flops  # noqa: E402

MASK_RCNN, UPERNET = DEMO_CONFIGS['maskrcnn'], DEMO_CONFIGS['upernet']


def built(config):
    """The config's whole model on the CPU, as the tools build it."""
    cfg, scope = _whole_model.load_config(config)
    return _whole_model.build_model(cfg, scope, 'cpu')


def nparams(module):
    return sum(p.numel() for p in module.parameters())


def test_backbone_only_is_count_flops_of_the_backbone():
    s = get_flops.main([UPERNET, '--backbone-only', '--shape', '64', '64'])
    backbone = built(UPERNET).backbone
    assert s['flops'] == count_flops(backbone, (1, 3, 64, 64))['total'] > 0
    assert s['params'] == nparams(backbone) > 0
    assert s['input_shape'] == [1, 3, 64, 64] and s['device'] == 'meta'


def test_mask_rcnn_split_by_module(tmp_path, capsys):
    out = str(tmp_path / 'flops.json')
    s = get_flops.main([MASK_RCNN, '--shape', '128', '128', '--out', out])
    printed = capsys.readouterr().out
    assert json.load(open(out))['flops'] == s['flops']
    # RoIAlign / NMS have no meta kernels: counted on the CPU, and said so
    assert s['device'] == 'cpu' and 'meta device' in s['note']
    rows = {r['module']: r for r in s['rows']}
    assert set(rows) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
    assert all(r['macs'] > 0 for r in rows.values())
    assert sum(r['macs'] for r in rows.values()) == s['flops']
    model = built(MASK_RCNN)
    assert s['params'] == nparams(model)
    assert all(rows[n]['params'] == nparams(getattr(model, n)) for n in rows)
    assert rows['backbone']['macs'] == count_flops(model.backbone, (1, 3, 128, 128))['total']
    # FPN (channels 32..256 -> 64) on the stride 4..32 maps of a 128 px image
    pixels = [(128 // st)**2 for st in (4, 8, 16, 32)]
    neck = sum(p * c * 64 for p, c in zip(pixels, (32, 64, 128, 256))) + sum(pixels) * 64 * 64 * 9
    assert rows['neck']['macs'] == neck
    # box head: 2 shared fcs (64x7x7 -> 256 -> 256), cls (3 + 1), reg (4 x 3) per RoI;
    # mask head: 4 3x3 convs at 14x14, a 2x2 deconv, 1x1 logits at 28x28, per RoI
    n_box, n_mask = s['rois']['bbox_head'], s['rois']['mask_head']
    assert 0 < n_mask <= 100 and n_mask <= n_box <= 100  # test_cfg.rpn.max_per_img = 100
    per_box = 64 * 49 * 256 + 256 * 256 + 256 * 4 + 256 * 12
    per_mask = 4 * 196 * 64 * 64 * 9 + 196 * 64 * 64 * 4 + 784 * 64 * 3
    assert rows['roi_head']['macs'] == n_box * per_box + n_mask * per_mask
    assert 'multiply-accumulates' in printed and f"{s['flops'] / 1e9:.3f}" in printed


def test_segmentor_on_meta_with_auxiliary_head_apart():
    s = get_flops.main([UPERNET])  # default: the config's 128x128 crop
    assert s['input_shape'] == [1, 3, 128, 128] and s['shape_source'] == "the config's crop size"
    assert s['device'] == 'meta' and s['note'] is None
    rows = {r['module']: r for r in s['rows']}
    aux = rows.pop('auxiliary_head')
    assert aux['in_total'] is False and aux['macs'] > 0
    assert set(rows) == {'backbone', 'decode_head'}
    assert s['flops'] == rows['backbone']['macs'] + rows['decode_head']['macs']
    assert rows['decode_head']['macs'] > rows['backbone']['macs'] > 0
    assert s['params'] == nparams(built(UPERNET)) == sum(
        r['params'] for r in s['rows'])


def test_detector_default_shape_is_mmdet_1280x800():
    cfg, scope = _whole_model.load_config(MASK_RCNN)
    assert _whole_model.default_shape(cfg, scope)[0] == (800, 1280)


def test_benchmark_backbone_cli(tmp_path):
    """As a user runs it: a subprocess, a backbone by registry name, --out JSON."""
    out = str(tmp_path / 'bench.json')
    r = subprocess.run([sys.executable, osp.join(TOOLS, 'benchmark.py'), '--model',
                        'vmamba_test', '--shape', '64', '--batch', '2', '--warmup', '1',
                        '--repeat', '3', '--out', out], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert 'images/s' in r.stdout
    b = json.load(open(out))
    assert b['repeat'] == 3 and len(b['times_ms']) == 3 and b['input_shape'] == [2, 3, 64, 64]
    assert 0 < b['min_ms'] <= b['median_ms'] <= b['max_ms']
    assert math.isclose(b['images_per_s'], 2e3 / b['median_ms']) and b['images_per_s'] > 0
    assert b['memory']['peak_mib'] > 0 and 'VmHWM' in b['memory']['kind']
    import mmvisbackbones
    net = mmvisbackbones.build_backbone('vmamba_test')
    assert b['params'] == nparams(net)
    assert b['outputs']['out_shapes'] == [[2, c, 64 // st, 64 // st] for c, st in
                                          zip(net.out_channels, (4, 8, 16, 32))]


def test_benchmark_detector_keeps_max_per_img_detections():
    r = benchmark.main([MASK_RCNN, '--shape', '128', '--batch', '2', '--warmup', '1',
                        '--repeat', '2'])
    assert r['test_cfg_overrides'] == {'test_cfg.rcnn.score_thr': 0.0}
    assert r['outputs']['detections_per_image'] == [20, 20]  # the demo's rcnn.max_per_img
    assert r['images_per_s'] > 0 and len(r['times_ms']) == 2


def test_benchmark_segmentor_train_step():
    r = benchmark.main([UPERNET, '--mode', 'train', '--shape', '64', '--batch', '2',
                        '--warmup', '1', '--repeat', '2'])
    assert r['mode'] == 'train' and math.isfinite(r['outputs']['loss'])
    assert r['images_per_s'] > 0 and r['params'] == nparams(built(UPERNET))


@pytest.mark.parametrize('tool,argv,message', [
    (get_flops, ['no/such/config.py'], 'config file not found: no/such/config.py'),
    (benchmark, ['no/such/config.py'], 'config file not found: no/such/config.py'),
    (benchmark, ['--model', 'vmamba_nosuch'], "unknown model 'vmamba_nosuch'; available:"),
    (benchmark, [], 'give a config file or --model NAME'),
    (get_flops, [UPERNET, '--shape', '16'], '--shape takes H W'),
])
def test_usage_errors(tool, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err, err
    if 'unknown model' in message:
        assert 'vmamba_test' in err  # the available names are listed


def test_counting_macs_splits_by_submodule_even_through_forward_calls():
    from mmvisbackbones.utils import counting_macs

    class Head(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)

    class Net(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(5, 4)
            self.head = Head()

        def forward(self, x):
            y = self.head.forward(self.body(x))  # like mmdet's roi_head.forward(...)
            return y @ torch.ones(3, 2)  # the model's own code

    net = Net()
    with counting_macs(net) as c:
        net(torch.zeros(6, 5))
    assert c.by_module == {'body': 6 * 5 * 4, 'head.fc': 6 * 4 * 3, '': 6 * 3 * 2}
    assert c.grouped(1) == {'body': 120, 'head': 72, '': 36} and c.total == 228


BEV = osp.join(ROOT, 'configs', 'demo', 'bevformer_vmamba-demo_nus-demo.py')


def test_bev_config_counts_six_cameras_of_the_nuscenes_rig(capsys):
    s = get_flops.main([BEV])
    # nuScenes' 1600x900 x img_scale 0.5 = 800x450, padded to the preprocessor's 32
    assert s['input_shape'] == [1, 6, 3, 480, 800], s['shape_source']
    assert 'padded to a multiple of 32' in s['shape_source']
    rows = {r['module']: r for r in s['rows']}
    assert {'img_backbone', 'img_neck', 'pts_bbox_head'} <= set(rows)
    assert sum(r['macs'] for r in rows.values()) == s['flops']
    cfg, scope = _whole_model.load_config(BEV, supported=('mmdet3d', ))
    model = _whole_model.build_model(cfg, scope, 'cpu')
    assert s['params'] == nparams(model)
    # the backbone runs once per camera
    per_camera = count_flops(model.img_backbone, (1, 3, 480, 800))['total']
    assert rows['img_backbone']['macs'] == 6 * per_camera > 0
    assert rows['img_backbone']['group'] == 'backbone' and rows['img_neck']['group'] == 'neck'
    assert 'input 1x6x3x480x800' in capsys.readouterr().out


def test_static_lidar2img_is_the_real_rig():
    import numpy as np
    from mmvisbackbones.datasets.nuscenes_demo import (_LIDAR_CALIB, _quat_to_mat,
                                                        _yaw_quat, static_lidar2img)
    m = static_lidar2img((1600, 900))
    assert m.shape == (6, 4, 4)
    # 12 m ahead of the car at 1 m height, in the lidar frame (mounted yawed -90 deg)
    r = _quat_to_mat(_yaw_quat(math.radians(_LIDAR_CALIB['yaw_deg'])))
    p = r.T @ (np.array([12.0, 0.0, 1.0]) - np.asarray(_LIDAR_CALIB['translation']))
    uvw = m @ np.append(p, 1.0)
    assert uvw[0, 2] > 0 and (uvw[3:, 2] < 0).all()  # in front of CAM_FRONT, behind the back
    u, v = uvw[0, :2] / uvw[0, 2]
    assert abs(u - 800) < 60 and abs(v - 450) < 120  # near the front image's centre
    half = static_lidar2img((800, 450))
    assert np.allclose((half @ np.append(p, 1.0))[0, :2] / uvw[0, 2], (u / 2, v / 2))


def test_benchmark_names_what_it_handles_for_a_bev_config(capsys):
    with pytest.raises(SystemExit):
        benchmark.main([BEV])
    assert 'this tool handles mmdet detectors and mmseg segmentors' in capsys.readouterr().err
