"""BEVFormer trained and evaluated through the real data path (generated
nuScenes-format data, info files, ``BEVFormerNuScenesDataset`` with its frame
queue, the data preprocessor): one training iteration with the tiny arch of
every backbone family of the zoo, the real recipe's training pipeline, and
``tools/test.py`` reporting NDS / mAP through ``NuScenesMetric``."""
import copy
import os.path as osp
import subprocess
import sys

import pytest
import torch

pytest.importorskip('mmdet3d')
pytest.importorskip('nuscenes')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mm_helpers import assert_gradients_reach  # noqa: E402
from zoo import ZOO  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo', 'bevformer_vmamba-demo_nus-demo.py')
TINY = osp.join(ROOT, 'configs', 'bevformer', 'bevformer-tiny_swin-t_8xb1-24e_nus.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from mmvisbackbones.datasets import create_nuscenes_infos, make_nuscenes_demo
    root = str(tmp_path_factory.mktemp('nuscenes'))
    make_nuscenes_demo(root, frames_per_scene=3, img_size=(160, 90), seed=0)
    create_nuscenes_infos(root, version='v1.0-mini')
    return root + '/'


def point_at(cfg, root):
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[name]
        dl.dataset.data_root = root
        dl.num_workers = 0
        dl.persistent_workers = False
    for name in ('val_evaluator', 'test_evaluator'):
        cfg[name].data_root = root
        cfg[name].ann_file = root + 'nuscenes_infos_temporal_val.pkl'
    return cfg


def build(cfg):
    import mmvisbackbones.detectors.bevformer  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def with_backbone(cfg, name):
    """The demo config around the zoo's tiny arch of ``name`` (strides 16/32)."""
    import mmvisbackbones  # noqa: F401
    from mmengine.registry import MODELS
    bb = dict(type=name, **ZOO[name]['kwargs'], out_indices=(2, 3))
    with torch.device('meta'):
        channels = MODELS.build(copy.deepcopy(bb)).out_channels
    cfg.model.backbone = bb
    cfg.model.neck.in_channels = channels
    return cfg


@pytest.mark.parametrize('backbone', sorted(ZOO))
def test_one_training_iteration_per_family(backbone, data_root):
    cfg = with_backbone(point_at(Config.fromfile(DEMO), data_root), backbone)
    cfg.train_dataloader.dataset.queue_length = 3
    model = build(cfg)
    assert type(model.img_backbone).__name__ == backbone
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    assert len(batch['inputs']['img']) == 2                    # batch size 2
    model.train()
    data = model.data_preprocessor(batch, True)
    assert data['inputs']['img'].shape[:3] == (2, 3, 6)        # (B, queue, cameras)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    assert_gradients_reach(model.img_backbone)


def test_real_recipe_pipeline_runs_on_nuscenes_format_data(data_root):
    """The tiny recipe's own training pipeline (photometric distortion per
    view, range/name filters, 0.5x scale) and queue of 3 on the data."""
    cfg = point_at(Config.fromfile(TINY), data_root)
    from mmdet3d.registry import DATASETS
    build(point_at(Config.fromfile(DEMO), data_root))         # registers the modules
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    item = ds[0]
    img = item['inputs']['img']
    assert img.shape == (3, 6, 3, 45, 80)
    meta = item['data_samples'].metainfo
    assert len(meta['queue_metas']) == 2 and meta['lidar2img'].shape == (6, 4, 4)


def test_tools_test_reports_nds_and_map(data_root, tmp_path):
    """tools/test.py on the demo config (mmdet3d scope from default_scope):
    the NuScenes metric runs through the devkit and reports NDS and mAP."""
    r = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), DEMO, '--untrained',
         '--work-dir', str(tmp_path / 'w'), '--cfg-options',
         f'test_dataloader.dataset.data_root={data_root}',
         f'test_evaluator.data_root={data_root}',
         f'test_evaluator.ann_file={data_root}nuscenes_infos_temporal_val.pkl',
         'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'pred_instances_3d_NuScenes/NDS' in out and 'pred_instances_3d_NuScenes/mAP' in out
