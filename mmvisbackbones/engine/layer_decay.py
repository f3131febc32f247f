"""Layer-wise learning-rate decay for the plain backbones (the BEiT /
ViT-Adapter recipe that Vision-RWKV's and PlainMamba's detection and
segmentation numbers use).

mmseg's ``LayerDecayOptimizerConstructor`` implements the same rule but
picks the numbering by the backbone's class name (BEiT / MAE / ConvNeXt,
``NotImplementedError`` otherwise) and reads ViT parameter names
``backbone.layers.{i}``; ours group their blocks into ``stages.{s}.{j}``.
Here the backbone numbers its own parameters (``layer_id(name)``, see
:meth:`mmvisbackbones.backbones.plain.PlainBackbone.layer_id`), so any
backbone that does so -- and a wrapper (the ViT-Adapter) that delegates to
it -- works unchanged::

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.85))

The rule, as upstream's: with ``L = num_layers`` blocks, a parameter of
layer ``l`` (0: patch / position embeddings and tokens; ``i + 1``: block
``i``; ``L + 1``: everything else -- the backbone's output norms and
pyramid, adapter modules, neck and heads) gets the learning rate
``base_lr * rate ** (L + 1 - l)``.  Weight decay is 0 for 1-D parameters and
biases and ``weight_decay`` for the rest.  (Upstream's exemption of
``pos_embed`` / ``cls_token`` compares bare names against the model's full
names, so it never applies; those keep their weight decay here too, to
reproduce the published runs.)  Frozen parameters are left out.
"""
from collections import OrderedDict
from typing import List, Optional

import torch.nn as nn
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

KNOWN_KEYS = ('layer_decay_rate', 'num_layers')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``paramwise_cfg``: ``layer_decay_rate`` (in (0, 1], required) and
    optionally ``num_layers``, which must then equal the backbone's depth
    (a guard against a config written for another size)."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        name = type(self).__name__
        cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(cfg) - set(KNOWN_KEYS))
        if unknown:
            raise ValueError(f'{name}: paramwise_cfg keys {unknown} are not supported '
                             f'(it takes {list(KNOWN_KEYS)}; custom_keys / *_decay_mult '
                             'belong to DefaultOptimWrapperConstructor)')
        rate = cfg.get('layer_decay_rate')
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 1:
            raise ValueError(f'{name}: paramwise_cfg.layer_decay_rate must be a number in '
                             f'(0, 1], got {rate!r}')
        num_layers = cfg.get('num_layers')
        if num_layers is not None and (not isinstance(num_layers, int) or num_layers < 1):
            raise ValueError(f'{name}: paramwise_cfg.num_layers must be a positive int, '
                             f'got {num_layers!r}')
        super().__init__(optim_wrapper_cfg, cfg)
        if self.base_lr is None:
            raise ValueError(f'{name}: the optimizer config needs `lr` (the scales apply to it)')
        self.layer_decay_rate = float(rate)
        self.num_layers = num_layers

    def _backbone(self, model: nn.Module):
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not callable(getattr(backbone, 'layer_id', None)):
            kind = 'no `backbone`' if backbone is None else type(backbone).__name__
            raise TypeError(f'{type(self).__name__}: the model needs a backbone that numbers its '
                            f'layers (`layer_id`, `num_layers`: the plain backbones Vim and '
                            f'VisionRWKV and their adapters); got {kind}')
        if self.num_layers is not None and self.num_layers != backbone.num_layers:
            raise ValueError(f'{type(self).__name__}: paramwise_cfg.num_layers={self.num_layers} '
                             f'but the backbone {type(backbone).__name__} has '
                             f'{backbone.num_layers} layers')
        return backbone

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        backbone = self._backbone(module)
        L = backbone.num_layers
        groups = OrderedDict()
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith('backbone.'):
                layer = backbone.layer_id(name[len('backbone.'):])
                if not 0 <= layer <= L + 1:
                    raise ValueError(f'{type(backbone).__name__}.layer_id({name!r}) = {layer}, '
                                     f'outside 0..{L + 1}')
            else:
                layer = L + 1
            no_decay = param.ndim == 1 or name.endswith('.bias')
            key = (layer, no_decay)
            if key not in groups:
                scale = self.layer_decay_rate**(L + 1 - layer)
                groups[key] = dict(params=[], param_names=[], lr=self.base_lr * scale,
                                   lr_scale=scale,
                                   group_name=f'layer_{layer}_{"no_decay" if no_decay else "decay"}')
                if no_decay or self.base_wd is not None:  # else: the optimizer's default
                    groups[key]['weight_decay'] = 0.0 if no_decay else self.base_wd
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        ordered = [groups[k] for k in sorted(groups)]
        if get_dist_info()[0] == 0:
            lines = [f'{g["group_name"]}: {len(g["params"])} tensors, lr {g["lr"]:.3g} '
                     f'(x{g["lr_scale"]:.4g}), weight_decay {g.get("weight_decay", "default")}'
                     for g in ordered]
            print_log(f'layer-wise lr decay {self.layer_decay_rate} over {L} layers of '
                      f'{type(backbone).__name__}:\n  ' + '\n  '.join(lines), logger='current')
        params.extend(ordered)
