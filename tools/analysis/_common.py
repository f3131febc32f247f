"""Shared pieces of the analysis tools (erf.py, feature_maps.py, biformer_routing.py):
build a backbone from a registry name or a config (optionally with a checkpoint),
load images normalised with the ImageNet mean/std, and a headless matplotlib."""
import glob
import os.path as osp
from typing import List, Optional, Tuple

import torch

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


def add_model_args(parser, multiple: bool = False):
    """--model/--config/--checkpoint/--device/--size, the same in every tool."""
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument('--model', nargs='+' if multiple else None,
                   help='registry name(s), e.g. vmamba_test (see mmvisbackbones.list_models())')
    g.add_argument('--config', help='config file; its model.backbone is built')
    parser.add_argument('--checkpoint', help='weights (upstream or ours), loaded with the '
                        "backbone's own converter via init_cfg=Pretrained")
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--size', type=int, default=224, help='input side in pixels')


def _backbone_cfg_from_config(path: str) -> dict:
    """``model.backbone`` of a config, after registering the config's scope."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    from mmengine.config import Config
    from mmvisbackbones.tools_utils import init_scope
    cfg = Config.fromfile(path)
    init_scope(cfg)
    bb = cfg.get('model', {}).get('backbone')
    if bb is None:
        raise ValueError(f'config {path} has no model.backbone')
    return bb.to_dict() if hasattr(bb, 'to_dict') else dict(bb)


def build(model: Optional[str], config: Optional[str], checkpoint: Optional[str],
          device: str) -> Tuple[torch.nn.Module, str]:
    """(backbone in eval mode on ``device`` with all 4 stages as outputs, label).
    Built after ``torch.manual_seed(0)``, so a randomly initialised model is the
    same in every run and every tool."""
    import mmvisbackbones
    from mmengine.registry import MODELS
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'--device {device} asked for but CUDA is not available')
    init = dict(type='Pretrained', checkpoint=checkpoint) if checkpoint else None
    torch.manual_seed(0)
    if config is not None:
        cfg = _backbone_cfg_from_config(config)
        cfg = {k: v for k, v in cfg.items() if k not in ('out_indices', 'init_cfg')}
        cls = MODELS.get(cfg['type'])
        if cls is None or cls not in mmvisbackbones.BACKBONES.values():
            raise ValueError(f"config {config}: backbone type {cfg['type']!r} is not an "
                             'mmvisbackbones backbone')
        net = MODELS.build({**cfg, 'out_indices': (0, 1, 2, 3), 'init_cfg': init})
        label = f"{cfg['type']} ({osp.basename(config)})"
    else:
        if model not in mmvisbackbones.list_models():
            raise ValueError(f'unknown model {model!r}; available: '
                             f'{", ".join(mmvisbackbones.list_models())}')
        net = mmvisbackbones.build_backbone(model, out_indices=(0, 1, 2, 3), init_cfg=init)
        label = model
    if checkpoint:
        net.init_weights()
        label += f' [{osp.basename(checkpoint)}]'
    else:
        label += ' [random init]'
    return net.to(device).eval(), label


def list_images(folder: str) -> List[str]:
    """Sorted .jpg/.jpeg/.png files of ``folder``; an error when there are none."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    files = sorted(f for f in glob.glob(osp.join(folder, '*')) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise FileNotFoundError(f'no .jpg/.jpeg/.png images in {folder}')
    return files


def load_image(path: str, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(normalised (3, size, size) tensor, (size, size, 3) RGB in [0, 1] for display)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    import numpy as np
    from PIL import Image
    img = Image.open(path).convert('RGB').resize((size, size), Image.BILINEAR)
    rgb = torch.from_numpy(np.asarray(img).copy()).float()
    return (rgb.permute(2, 0, 1) - MEAN) / STD, rgb / 255.0


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: str, dpi: int):
    """Save without bbox_inches='tight' so the pixel size is figsize * dpi exactly."""
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
