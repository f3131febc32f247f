"""Helpers for tests that run mmdet / mmseg consumers on the demo data."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmvisbackbones import BACKBONES
from zoo import ZOO

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = {
    'maskrcnn': osp.join(ROOT, 'configs/demo/mask-rcnn_vmamba-demo_fpn_coco-demo.py'),
    'upernet': osp.join(ROOT, 'configs/demo/upernet_vmamba-demo_ade-demo.py'),
    'dino': osp.join(ROOT, 'configs/demo/dino-4scale_vmamba-demo_coco-demo.py'),
}


def scope_of(kind):
    return 'mmseg' if kind == 'upernet' else 'mmdet'


def set_channels(cfg, kind, channels):
    """Wire a backbone's out_channels into the consumer's neck / heads."""
    if kind == 'maskrcnn':
        cfg.model.neck.in_channels = channels
    elif kind == 'upernet':
        cfg.model.decode_head.in_channels = channels
        cfg.model.auxiliary_head.in_channels = channels[2]
    elif kind == 'dino':
        cfg.model.neck.in_channels = channels


def demo_cfg(kind, data_root, backbone=None, workers=0, batch_size=2):
    """Demo config of ``kind`` reading the demo data under ``data_root``
    (``<data_root>/coco`` or ``<data_root>/ade``), optionally with a zoo backbone."""
    cfg = Config.fromfile(DEMO_CONFIGS[kind])
    if kind == 'upernet':
        root = osp.join(data_root, 'ade', 'ADEChallengeData2016')
    else:
        root = osp.join(data_root, 'coco') + '/'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[name]
        dl.dataset.data_root = root
        dl.num_workers = workers
        dl.persistent_workers = workers > 0
        dl.batch_size = batch_size
    for name in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[name]:
            cfg[name].ann_file = osp.join(root, 'annotations/instances_val2017.json')
    if backbone is not None:
        out_indices = (1, 2, 3) if kind == 'dino' else (0, 1, 2, 3)
        bb = BACKBONES[backbone](**ZOO[backbone]['kwargs'], out_indices=out_indices)
        cfg.model.backbone = dict(type=backbone, **ZOO[backbone]['kwargs'],
                                  out_indices=out_indices)
        set_channels(cfg, kind, bb.out_channels)
    return cfg


def build_in_scope(cfg, kind):
    init_default_scope(scope_of(kind))
    import mmvisbackbones  # noqa: F401
    if scope_of(kind) == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS.build(cfg.model)


def one_iteration_and_prediction(cfg, kind):
    """Build ``cfg``'s model, run one training iteration on its train data
    (finite loss, gradients reach the backbone) and one prediction; returns
    the model."""
    from mmengine.runner import Runner
    model = build_in_scope(cfg, kind)
    model.init_weights()
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    assert_gradients_reach(model.backbone)
    model.eval()
    val_batch = next(iter(Runner.build_dataloader(cfg.val_dataloader)))
    with torch.no_grad():
        preds = model.val_step(val_batch)
    assert len(preds) == len(val_batch['inputs'])
    return model


def batches(loader, n):
    """``n`` batches of ``loader``, starting it again when it runs out."""
    it = iter(loader)
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            it = iter(loader)
            yield next(it)


def write_demo_cfg(path, kind, data_root, extra='', val_batch_size=1):
    """A config file for tools/train.py / tools/test.py: the demo config of
    ``kind`` reading ``data_root`` (the ``coco/`` folder for mmdet demos, the
    ``ADEChallengeData2016`` one for UperNet), loaders without workers, then
    ``extra`` config lines."""
    root = str(data_root).rstrip('/') + '/'
    text = f"""_base_ = {DEMO_CONFIGS[kind]!r}
data_root = {root!r}
train_dataloader = dict(num_workers=0, persistent_workers=False, batch_size=2,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, batch_size={val_batch_size},
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
"""
    if kind != 'upernet':
        text += """val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
"""
    with open(path, 'w') as f:
        f.write(text + extra)
    return str(path)


def assert_gradients_reach(module):
    """After a backward: every trainable parameter of ``module`` has a
    finite gradient, and not all of them are zero."""
    import torch
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f'no gradient reached {missing[:5]}'
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(g.abs().sum() for g in grads.values()) > 0
