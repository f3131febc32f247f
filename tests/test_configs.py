"""The real configs parse, wire channels consistently and fail clearly
without their data / pretrained weights."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from mm_helpers import ROOT, build_in_scope

#: config folder -> (name used in the config file names, archs with the full set,
#: extra per-arch file-name patterns)
FAMILY_CONFIGS = {
    'vmamba': ('vmamba', ('t', 's', 'b'), ['mask-rcnn_vmamba-{a}_fpn_ms-crop-3x_coco.py']),
    'vim': ('vim', ('t', 's'), []),
    'vision_rwkv': ('vrwkv', ('t', 's'), []),
    'mlla': ('mlla', ('t', 's'), []),
    'swin': ('swin', ('t', 's'), []),
    'pvtv2': ('pvtv2', ('b1', 'b2'), []),
    'biformer': ('biformer', ('t', 's'), []),
    # upstream's own recipes only (PLAIN_MAMBA_RECIPES)
    'plain_mamba': ('plainmamba', (), []),
}
FAMILIES = tuple(FAMILY_CONFIGS)
CONFIGS = sorted(p for f in FAMILIES for p in glob.glob(osp.join(ROOT, 'configs', f, '*.py'))) \
    + [osp.join(ROOT, 'configs', 'vmamba_maskrcnn.py')]


#: the ViT-Adapter configs follow upstream Vision-RWKV's recipes:
#: (AdamW lr, weight decay, layer-wise lr decay) by file name
ADAPTER_RECIPES = {
    'mask-rcnn_vrwkv-adapter-t_fpn_1x_coco.py': (2e-4, 0.01, 0.85),
    'mask-rcnn_vrwkv-adapter-s_fpn_1x_coco.py': (1e-4, 0.05, 0.85),
    'upernet_vrwkv-adapter-t_8xb2-160k_ade20k-512x512.py': (12e-5, 0.01, 0.95),
    'upernet_vrwkv-adapter-s_8xb2-160k_ade20k-512x512.py': (6e-5, 0.01, 0.85),
}

#: PlainMamba's upstream recipes: (AdamW lr, weight decay), no layer-wise decay
PLAIN_MAMBA_RECIPES = {
    'mask-rcnn_plainmamba-adapter-l1_fpn_1x_coco.py': (1e-4, 0.05),
    'mask-rcnn_plainmamba-adapter-l2_fpn_1x_coco.py': (1e-4, 0.05),
    'upernet_plainmamba-l1_8xb2-160k_ade20k-512x512.py': (6e-5, 0.01),
    'upernet_plainmamba-l2_8xb2-160k_ade20k-512x512.py': (6e-5, 0.01),
}


def pretrained_cfg(cfg):
    """The backbone's ``init_cfg`` (for an adapter, its plain model's)."""
    bb = cfg.model.backbone
    if bb.type == 'ViTAdapter':
        return bb.backbone.init_cfg
    return bb.backbone_init_cfg if bb.type == 'VisionRWKVAdapter' else bb.init_cfg


def _expected(family, archs, extra=()):
    for a in archs:
        yield f'mask-rcnn_{family}-{a}_fpn_1x_coco.py'
        yield f'upernet_{family}-{a}_4xb4-160k_ade20k-512x512.py'
        yield f'dino-4scale_{family}-{a}_8xb2-12e_coco.py'
        for e in extra:
            yield e.format(a=a)


def test_config_set_is_complete():
    names = {osp.basename(c) for c in CONFIGS}
    expected = set(ADAPTER_RECIPES) | set(PLAIN_MAMBA_RECIPES)
    for family, archs, extra in FAMILY_CONFIGS.values():
        expected |= set(_expected(family, archs, extra))
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_channels_consistent(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports['imports'] == ['mmvisbackbones']
    bb_cfg = dict(cfg.model.backbone)
    bb_cfg.pop('init_cfg', None)
    if bb_cfg['type'] == 'ViTAdapter':
        bb_cfg['backbone'] = {k: v for k, v in bb_cfg['backbone'].items() if k != 'init_cfg'}
    with torch.device('meta'):
        bb = MODELS.build(bb_cfg)
    ch = bb.out_channels
    if 'upernet' in path:
        assert cfg.default_scope == 'mmseg'
        assert cfg.model.decode_head.in_channels == ch
        assert cfg.model.auxiliary_head.in_channels == ch[cfg.model.auxiliary_head.in_index]
        assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    elif 'dino' in path:
        assert cfg.default_scope == 'mmdet'
        assert bb.out_strides == [8, 16, 32]
        assert cfg.model.neck.in_channels == ch
        levels = cfg.model.num_feature_levels
        assert cfg.model.neck.num_outs == levels
        assert cfg.model.encoder.layer_cfg.self_attn_cfg.num_levels == levels
        assert cfg.model.decoder.layer_cfg.cross_attn_cfg.num_levels == levels
    else:
        assert cfg.default_scope == 'mmdet'
        assert cfg.model.neck.in_channels == ch
        assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        if osp.basename(path) not in ADAPTER_RECIPES:
            assert cfg.optim_wrapper.optimizer.lr == 1e-4
            assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    if osp.basename(path) in ADAPTER_RECIPES:
        lr, wd, decay = ADAPTER_RECIPES[osp.basename(path)]
        opt = cfg.optim_wrapper
        assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ('AdamW', lr, wd)
        assert opt.constructor == 'LayerDecayOptimWrapperConstructor'
        assert opt.paramwise_cfg == dict(num_layers=12, layer_decay_rate=decay)
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    if osp.basename(path) in PLAIN_MAMBA_RECIPES:
        lr, wd = PLAIN_MAMBA_RECIPES[osp.basename(path)]
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', lr, wd)
        opt = cfg.optim_wrapper
        assert opt.paramwise_cfg.custom_keys['.direction_Bs'] == dict(decay_mult=0.)
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
        if 'upernet' in path:  # upstream's: four stride-16 maps, whole-image test
            assert bb.out_strides == [16] * 4 and cfg.model.test_cfg.mode == 'whole'
    assert pretrained_cfg(cfg).checkpoint.startswith('checkpoints/')


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_real_config_builds_and_names_missing_pretrained(path, tmp_path, monkeypatch):
    """The whole detector / segmentor and its optimizer (paramwise_cfg
    included) build from the real config; without the released weights,
    init_weights stops with an error naming the file."""
    from mmengine.optim import build_optim_wrapper
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(path)
    kind = 'upernet' if 'upernet' in path else 'dino' if 'dino' in path else 'maskrcnn'
    model = build_in_scope(cfg, kind)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    n_opt = sum(p.numel() for g in wrapper.optimizer.param_groups for p in g['params'])
    assert n_opt == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with pytest.raises(FileNotFoundError, match=osp.basename(pretrained_cfg(cfg).checkpoint)):
        model.init_weights()


@pytest.mark.parametrize('config,where', [
    ('configs/vmamba_maskrcnn.py', 'data/coco'),
    ('configs/vmamba/upernet_vmamba-t_4xb4-160k_ade20k-512x512.py',
     'data/ade/ADEChallengeData2016'),
])
def test_train_without_dataset_says_where_it_must_be(tmp_path, config, where):
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'),
                        osp.join(ROOT, config)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert 'dataset not found' in r.stderr and where in r.stderr, r.stderr[-2000:]
