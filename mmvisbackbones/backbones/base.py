"""The feature contract every backbone of this package follows.

* ``forward(x: (N, C, H, W)) -> tuple`` of NCHW maps, one per ``out_indices``
  entry, high resolution first, each through its own output norm
  (``norm{i}``); any ``H, W >= min_input_size``, with output ``i`` of size
  ``ceil(H / stride_i) x ceil(W / stride_i)``.
* ``out_channels`` / ``out_strides`` / ``feature_info`` describe the outputs.
* ``frozen_stages`` (re-applied on every ``train()``), ``norm_eval``,
  ``with_cp``, ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

A subclass builds ``self.patch_embed`` and ``self.stages`` (a ModuleList),
sets ``self.num_features`` / ``self.strides`` (per stage) and implements
``forward_stages``; it may override :meth:`convert_checkpoint` to map an
upstream key layout onto its own.
"""
import copy
import difflib
import functools
import inspect
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.checkpoint import load_pretrained


class BaseBackbone(BaseModule):
    #: name -> dict of architecture hyper-parameters
    arch_zoo: Dict[str, dict] = {}
    #: prefix of the plain-PyTorch model names, e.g. 'vmamba' -> 'vmamba_tiny'
    model_name: str = ''
    #: arch -> parameter count the upstream project reports (for the README)
    upstream_params: Dict[str, str] = {}
    min_input_size: int = 32
    #: parameters of ours that upstream's classification model lacks
    #: (dense-prediction additions such as a simple feature pyramid)
    dense_only_prefixes: Tuple[str, ...] = ()
    #: build kwargs that make ours match upstream's classification model
    classification_kwargs: Dict = {}
    #: False for a dense-prediction model that upstream has no classifier of
    #: (a plain model with its adapter): no classification count
    has_classification_model: bool = True

    def __init_subclass__(cls, **kwargs):
        """Wrap each family's ``__init__`` so that a misspelled argument (a
        typo in a config) names the valid ones, and the arch's name is kept
        (``self.arch_name``) for error messages."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None or getattr(init, '_checks_arguments', False):
            return
        sig = inspect.signature(init)
        params = [p for p in sig.parameters.values() if p.name != 'self']
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return  # forwards what it does not know: the callee checks
        valid = sorted(p.name for p in params)

        @functools.wraps(init)
        def checked_init(self, *args, **kw):
            unknown = [k for k in kw if k not in valid]
            if unknown:
                hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
                said = ', '.join(f'{k!r}' + (f' (did you mean {h[0]!r}?)' if h else '')
                                 for k, h in hints.items())
                raise TypeError(f'{cls.__name__}: unknown argument{"s" if len(unknown) > 1 else ""}'
                                f' {said}; valid arguments are {", ".join(valid)}')
            if 'arch' in sig.parameters:  # a base class's __init__ has none
                arch = sig.bind(self, *args, **kw).arguments.get(
                    'arch', sig.parameters['arch'].default)
                self.arch_name = arch.lower() if isinstance(arch, str) else 'custom'
            init(self, *args, **kw)

        checked_init._checks_arguments = True
        cls.__init__ = checked_init

    def __init__(self,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 in_channels: int = 3,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=copy.deepcopy(init_cfg))
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        self.out_indices = tuple(int(i) for i in out_indices)
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)
        self.with_cp = bool(with_cp)
        self.in_channels = int(in_channels)

    # ------------------------------------------------------------------ arch
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> dict:
        """Arch table entry by name, or a user dict checked for the needed keys."""
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; '
                                 f'choose one of {sorted(cls.arch_zoo)} or pass a dict')
            return dict(cls.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'{cls.__name__}: arch must be a str or dict, got {type(arch)}')
        required = set.intersection(*(set(v) for v in cls.arch_zoo.values()))
        missing = required - set(arch)
        if missing:
            raise ValueError(f'{cls.__name__}: custom arch dict lacks keys {sorted(missing)}')
        known = set.union(*(set(v) for v in cls.arch_zoo.values()))
        unknown = sorted(set(arch) - known)
        if unknown:
            hints = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
            said = ', '.join(f'{k!r}' + (f' (did you mean {h[0]!r}?)' if h else '')
                             for k, h in hints.items())
            raise ValueError(f'{cls.__name__}: custom arch dict has unknown keys {said}; '
                             f'its keys are {", ".join(sorted(known))}')
        for key, value in arch.items():
            cls._check_arch_value(key, value)
        return dict(arch)

    @classmethod
    def _check_arch_value(cls, key: str, value):
        """``value`` must have one of the types the arch table uses for
        ``key`` (ints for ints, numbers for floats, sequences of those)."""
        examples = [(n, a[key]) for n, a in cls.arch_zoo.items() if key in a]

        def kind(v):
            if v is None:
                return 'None'
            if isinstance(v, bool):
                return 'bool'
            if isinstance(v, int):
                return 'int'
            if isinstance(v, float):
                return 'float'
            if isinstance(v, str):
                return 'str'
            if isinstance(v, (list, tuple)):
                inner = {kind(x) for x in v}
                return 'seq[' + ('float' if inner == {'int', 'float'} else
                                 '|'.join(sorted(inner))) + ']'
            return type(v).__name__

        allowed = {kind(v) for _, v in examples}
        got = kind(value)
        ok = got in allowed or (got == 'int' and 'float' in allowed) or (
            got == 'seq[int]' and 'seq[float]' in allowed) or (
            got.startswith('seq[') and any(a.startswith('seq[') and set(got[4:-1].split('|'))
                                           <= set(a[4:-1].split('|')) | {'int'} and
                                           'float' in a for a in allowed))
        if not ok:
            name, ex = examples[0]
            raise TypeError(f'{cls.__name__}: custom arch {key!r} must be '
                            f'{" or ".join(sorted(allowed))} (arch {name!r} has {ex!r}), got '
                            f'{type(value).__name__} {value!r}')

    def _check_out_indices(self, num_stages: int):
        for i in self.out_indices:
            if not 0 <= i < num_stages:
                raise ValueError(f'{type(self).__name__}: out_indices {self.out_indices} '
                                 f'must lie in [0, {num_stages - 1}]')
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f'{type(self).__name__}: out_indices {self.out_indices} '
                             'must be strictly increasing (high resolution first)')
        if not -1 <= self.frozen_stages <= num_stages:
            raise ValueError(f'{type(self).__name__}: frozen_stages={self.frozen_stages} '
                             f'must lie in [-1, {num_stages}]')

    # --------------------------------------------------------- feature info
    @property
    def out_channels(self) -> List[int]:
        return [self.num_features[i] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        return [self.strides[i] for i in self.out_indices]

    @property
    def feature_info(self) -> List[dict]:
        """timm-style description of the outputs."""
        return [dict(num_chs=self.num_features[i], reduction=self.strides[i], index=i,
                     module=f'stages.{i}') for i in self.out_indices]

    # ----------------------------------------------------------------- input
    def check_input(self, x: torch.Tensor):
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{name} expects a torch.Tensor, got {type(x).__name__}')
        if x.dim() != 4:
            raise ValueError(f'{name} expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{name} was built for {self.in_channels}-channel images, got '
                             f'{x.shape[1]} channels (input shape {tuple(x.shape)})')
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f'{name} needs H and W >= {self.min_input_size}, got '
                             f'{tuple(x.shape[2:])}; pad or resize the input')
        if not x.is_floating_point():
            raise TypeError(f'{name} expects a floating-point input, got {x.dtype}')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        return tuple(self.forward_stages(x))

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    #: hierarchical models whose stages pass (B, H, W, C) tokens set this
    channels_last_stages: bool = False

    def stage_outputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Run ``self.stages`` on the stem's output ``x`` and return the
        ``out_indices`` outputs, each through its ``norm{i}``, as contiguous
        NCHW maps (the loop every hierarchical backbone shares)."""
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                y = getattr(self, f'norm{i}')(x)
                if self.channels_last_stages:
                    y = y.permute(0, 3, 1, 2)
                outs.append(y.contiguous())
        return outs

    # ------------------------------------------------------- freeze / train
    def frozen_modules(self) -> List[nn.Module]:
        """Modules to freeze for ``self.frozen_stages`` (mmdet's convention:
        0 freezes the stem, k >= 1 the stem and stages 0..k-1 with their
        output norms)."""
        mods = []
        if self.frozen_stages >= 0:
            mods.append(self.patch_embed)
        for i in range(self.frozen_stages):
            mods.append(self.stages[i])
            if hasattr(self, f'norm{i}'):
                mods.append(getattr(self, f'norm{i}'))
        return mods

    def frozen_params(self) -> List[nn.Parameter]:
        """Parameters outside modules that freeze with the stem
        (e.g. position embeddings); none here."""
        return []

    def checkpoint_optional_prefixes(self) -> Tuple[str, ...]:
        """Keys a pretrained checkpoint may lack: the output norms and the
        dense-only parts, which an upstream classification model does not
        have (they stay at their init)."""
        return tuple(f'norm{i}.' for i in self.out_indices) + tuple(self.dense_only_prefixes)

    def unused_modules(self) -> List[nn.Module]:
        """Modules the forward never runs: the stages after the last of
        ``out_indices``.  They are built, so that checkpoints keep upstream's
        layout, but have ``requires_grad=False``: DistributedDataParallel with
        ``find_unused_parameters=False`` (mmengine's default) then has no
        parameter left without a gradient."""
        return list(self.stages[max(self.out_indices) + 1:])

    def _freeze_stages(self):
        for m in self.unused_modules():
            for p in m.parameters():
                p.requires_grad = False
        for m in self.frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        if self.frozen_stages >= 0:
            for p in self.frozen_params():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, (_BatchNorm, nn.SyncBatchNorm)):
                    m.eval()
        return self

    # ----------------------------------------------------------- counting
    @classmethod
    def classification_head_params(cls, channels: int, arch: dict) -> int:
        """Parameters of upstream's classification head on ``channels``
        features: one linear layer to 1000 classes unless a family says
        otherwise."""
        return channels * 1000 + 1000

    @classmethod
    def classification_params(cls, arch: str) -> int:
        """Our parameter count as upstream counts its classification model:
        the trunk with the last output norm standing in for upstream's final
        norm, without our dense-only parts, plus upstream's head.  Compared
        with the published figures in the README table and the tests."""
        if not cls.has_classification_model:
            raise TypeError(f'{cls.__name__} has no classification model upstream')
        with torch.device('meta'):
            net = cls(arch=arch, **cls.classification_kwargs)
        last = len(net.num_features) - 1
        skip = tuple(f'norm{i}.' for i in net.out_indices if i != last) + cls.dense_only_prefixes
        trunk = sum(p.numel() for n, p in net.named_parameters() if not n.startswith(skip))
        return trunk + cls.classification_head_params(net.num_features[last],
                                                       cls.resolve_arch(arch))

    # ------------------------------------------------------------ weights
    @staticmethod
    def convert_checkpoint(state_dict: Dict[str, torch.Tensor],
                           model: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
        """Map an upstream checkpoint's keys onto this model (identity here)."""
        return state_dict

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            checkpoint = cfg.get('checkpoint')
            if not checkpoint:
                raise ValueError(f'{type(self).__name__}: init_cfg type Pretrained needs a '
                                 f'non-empty "checkpoint", got {checkpoint!r}')
            load_pretrained(self, checkpoint, converter=type(self).convert_checkpoint,
                            prefix=cfg.get('prefix'), strict=cfg.get('strict', True))
            self._is_init = True
            self._freeze_stages()
            return
        super().init_weights()
