"""The real BEVFormer configs: the upstream recipe, channels wired through
the neck, the whole detector and its optimizer build, a missing pretrained
file is named, and a missing nuScenes says where it must be."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

pytest.importorskip('mmdet3d')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'bevformer', 'bevformer-*.py')))
#: recipe -> (bev size, encoder layers, feature levels, image scale, queue)
RECIPES = {'tiny': (50, 3, 1, 0.5, 3), 'small': (150, 3, 1, 0.8, 3), 'base': (200, 6, 4, 1.0, 4)}
FAMILIES = ('VMamba', 'Swin', 'Vim', 'VisionRWKV', 'MLLA', 'PVTv2', 'BiFormer')


def build_model(cfg):
    import mmvisbackbones.detectors.bevformer  # noqa: F401
    from mmdet3d.registry import MODELS
    from mmdet3d.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS.build(cfg.model)


def test_config_set_is_complete():
    names = {osp.basename(c) for c in CONFIGS}
    for size in RECIPES:
        for bb in ('vmamba-t', 'swin-t'):
            assert f'bevformer-{size}_{bb}_8xb1-24e_nus.py' in names
    types = {Config.fromfile(c).model.backbone.type for c in CONFIGS
             if 'bevformer-tiny_' in c}
    assert types == set(FAMILIES)          # the tiny recipe for every family


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_recipe_matches_upstream(path):
    cfg = Config.fromfile(path)
    size = osp.basename(path).split('_')[0].split('-')[1]
    bev, layers, levels, scale, queue = RECIPES[size]
    head = cfg.model.pts_bbox_head
    assert cfg.default_scope == 'mmdet3d'
    assert head.bev_h == head.bev_w == bev
    assert head.positional_encoding.row_num_embed == head.positional_encoding.col_num_embed == bev
    assert head.transformer.encoder.num_layers == layers
    assert head.transformer.num_feature_levels == levels == cfg.model.neck.num_outs
    assert head.num_query == 900 and head.transformer.decoder.num_layers == 6
    assert cfg.train_dataloader.dataset.queue_length == queue
    for pipe in (cfg.train_dataloader.dataset.pipeline, cfg.val_dataloader.dataset.pipeline):
        assert [t for t in pipe if t.type == 'MultiViewImageScale'][0].scale == scale
    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and opt.optimizer.lr == 2e-4
    assert opt.optimizer.weight_decay == 0.01
    assert opt.paramwise_cfg.custom_keys.img_backbone.lr_mult == 0.1
    assert opt.clip_grad.max_norm == 35
    assert cfg.train_cfg.max_epochs == 24
    assert any(s.type == 'CosineAnnealingLR' for s in cfg.param_scheduler)
    assert cfg.val_evaluator.type == 'NuScenesMetric'
    assert cfg.train_dataloader.dataset.data_root == 'data/nuscenes/'
    assert cfg.model.backbone.init_cfg.checkpoint.startswith('checkpoints/')


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_real_config_builds_and_names_missing_pretrained(path, tmp_path, monkeypatch):
    from mmengine.optim import build_optim_wrapper
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(path)
    model = build_model(cfg)
    assert type(model.img_backbone).__name__ == cfg.model.backbone.type
    assert list(model.img_neck.in_channels) == list(model.img_backbone.out_channels)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    n_opt = sum(p.numel() for g in wrapper.optimizer.param_groups for p in g['params'])
    assert n_opt == sum(p.numel() for p in model.parameters() if p.requires_grad)
    lrs = {g['lr'] for g in wrapper.optimizer.param_groups}
    assert lrs == {2e-4, 2e-5}
    with pytest.raises(FileNotFoundError,
                       match=osp.basename(cfg.model.backbone.init_cfg.checkpoint)):
        model.init_weights()


def test_train_without_nuscenes_says_where_it_must_be(tmp_path):
    config = osp.join(ROOT, 'configs', 'bevformer', 'bevformer-tiny_vmamba-t_8xb1-24e_nus.py')
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert 'dataset not found' in r.stderr, r.stderr[-2000:]
    assert 'data/nuscenes' in r.stderr and 'create_nuscenes_infos.py' in r.stderr
