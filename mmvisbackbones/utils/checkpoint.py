"""Loading pretrained backbone weights: upstream releases and our own checkpoints.

A checkpoint is untrusted input, so it is read with ``torch.load(...,
weights_only=True)``; the few non-tensor types that mmengine's Runner writes
into its checkpoints are allow-listed in :mod:`mmvisbackbones.utils.serialization`.
"""
import os
import os.path as osp
import pickle
import re
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.logging import MMLogger, print_log

from .serialization import register_safe_globals

_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')


class CheckpointMismatchError(ValueError):
    """Raised when no parameter of a checkpoint fits the model."""


def load_checkpoint_file(path: str) -> dict:
    """Read a checkpoint from disk with ``weights_only=True``.

    Raises ``FileNotFoundError`` naming the path when it does not exist and a
    ``RuntimeError`` naming the offending types when the file holds objects
    outside the allow-list.
    """
    path = os.fspath(path)
    if path.startswith(('http://', 'https://')):
        raise ValueError(
            f'checkpoint {path!r} is a URL; this package never downloads at run time. '
            'Download it yourself and point init_cfg.checkpoint at the local file.')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'checkpoint file not found: {path!r} (cwd: {os.getcwd()}). '
            'Download the released weights and set init_cfg=dict(type="Pretrained", '
            'checkpoint=<local path>), or remove init_cfg to train from scratch.')
    register_safe_globals()
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'allowed global' in str(e) or 'Unsupported global' in str(e):
            raise RuntimeError(
                f'checkpoint {path!r} holds Python objects outside the weights-only allow-list, '
                f'so it was not loaded ({e}). If you trust the file, re-save only its tensors: '
                f'python tools/clean_checkpoint.py {path} clean.pth --trust') from e
        raise CheckpointReadError(_unreadable(path, e)) from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError,
            IndexError, TypeError) as e:
        raise CheckpointReadError(_unreadable(path, e)) from e


class CheckpointReadError(RuntimeError):
    """A checkpoint file that cannot be read: truncated, corrupted, or not a
    torch checkpoint."""


def _unreadable(path: str, err: BaseException) -> str:
    size = osp.getsize(path)
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ''
    return (f'checkpoint {path!r} ({size} bytes) could not be read: it is truncated, corrupted '
            f'or not a torch checkpoint ({type(err).__name__}{": " + detail if detail else ""}). '
            'Nothing was loaded. Download or save it again (a copy interrupted half-way '
            'leaves such a file).')


def extract_state_dict(ckpt) -> Dict[str, torch.Tensor]:
    """The tensor dict of a checkpoint saved under ``state_dict`` / ``model`` /
    ``module`` / ``model_ema`` or bare."""
    if not isinstance(ckpt, dict):
        raise TypeError(f'checkpoint must be a dict, got {type(ckpt).__name__}')
    for key in _CONTAINER_KEYS:
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    sd = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointMismatchError(
            f'checkpoint holds no tensors (top-level keys: {sorted(ckpt)[:10]})')
    return sd


def strip_prefixes(sd: Dict[str, torch.Tensor], prefix: Optional[str] = None):
    """Drop DataParallel's ``module.`` and, for a whole-detector/segmentor
    checkpoint, keep only the ``backbone.`` entries (or the given prefix)."""
    sd = {(k[7:] if k.startswith('module.') else k): v for k, v in sd.items()}
    if prefix is None and any(k.startswith('backbone.') for k in sd):
        prefix = 'backbone.'
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def rename_first_match(key: str, rules) -> str:
    """``key`` rewritten by the first of the ``(pattern, replacement)`` rules
    whose pattern (a regex string or compiled) matches it; unchanged when none
    does.  The converters' key-renaming tables go through this."""
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def match_state_dict(model: nn.Module, sd: Dict[str, torch.Tensor]):
    """Split ``sd`` against ``model``'s state dict.

    Returns ``(loadable, missing, unexpected, mismatched)``; ``mismatched`` is
    a list of ``(key, ckpt_shape, model_shape)``.
    """
    own = model.state_dict()
    loadable, unexpected, mismatched = {}, [], []
    for k, v in sd.items():
        if k not in own:
            unexpected.append(k)
        elif own[k].shape != v.shape:
            mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            loadable[k] = v
    mismatched_keys = {m[0] for m in mismatched}
    missing = [k for k in own if k not in loadable and k not in mismatched_keys]
    return loadable, missing, unexpected, mismatched


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    converter: Optional[Callable[[dict, nn.Module], dict]] = None,
                    prefix: Optional[str] = None,
                    logger: Optional[MMLogger] = None,
                    strict: bool = True) -> dict:
    """Load ``checkpoint`` into ``model`` through ``converter``.

    ``converter(state_dict, model)`` maps an upstream key layout onto ours (and
    resizes what must be resized); it leaves keys already in our layout alone.
    Keys of the checkpoint the model lacks (a classification head, say) are
    logged and ignored.  With ``strict`` (the default), a shape mismatch or a
    model tensor the checkpoint lacks raises :class:`CheckpointMismatchError`
    naming them and the arch the checkpoint looks like, before anything is
    loaded; only the tensors ``model.checkpoint_optional_prefixes()`` names
    (the dense-prediction additions an upstream classification checkpoint
    has no weights for) may be missing.  ``strict=False`` loads what fits and
    logs the rest.  When nothing matches, :class:`CheckpointMismatchError` is
    raised with examples of both sides' keys.  Returns a report dict.
    """
    logger = logger or MMLogger.get_current_instance()
    sd = strip_prefixes(extract_state_dict(load_checkpoint_file(checkpoint)), prefix)
    if converter is not None:
        sd = converter(sd, model)
    loadable, missing, unexpected, mismatched = match_state_dict(model, sd)
    name = type(model).__name__
    if not loadable and not mismatched:
        raise CheckpointMismatchError(
            f'no parameter of checkpoint {checkpoint!r} matches {name}: '
            f'checkpoint keys (after conversion) look like {sorted(sd)[:5]}, '
            f'the model expects keys like {list(model.state_dict())[:5]}. '
            f'{describe_checkpoint(model, sd)}')
    optional = tuple(getattr(model, 'checkpoint_optional_prefixes', lambda: ())())
    required_missing = [k for k in missing if not k.startswith(optional)] if optional else missing
    if strict and (mismatched or required_missing):
        parts = []
        if mismatched:
            parts.append(f'{len(mismatched)} shape mismatches (' + _short(
                [f'{k}: checkpoint {a} vs model {b}' for k, a, b in mismatched], 6) + ')')
        if required_missing:
            parts.append(f'{len(required_missing)} of the model\'s tensors missing from it ('
                         + _short(required_missing, 6) + ')')
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint!r} does not fit {name}'
            f'{_arch_of(model)}: {"; ".join(parts)}. {describe_checkpoint(model, sd)} '
            'Nothing was loaded. Pick the config of the checkpoint\'s arch, or pass '
            "init_cfg=dict(type='Pretrained', checkpoint=..., strict=False) to load the "
            'tensors that fit and leave the rest at their init.')
    model.load_state_dict(loadable, strict=False)
    print_log(f'{name}: loaded {len(loadable)}/{len(model.state_dict())} tensors from '
              f'{checkpoint}', logger=logger)
    if missing:
        print_log(f'{name}: missing keys (left at their init): {_short(missing)}',
                  logger=logger, level=30)
    if unexpected:
        print_log(f'{name}: unexpected keys (ignored): {_short(unexpected)}',
                  logger=logger, level=30)
    if mismatched:
        print_log(f'{name}: shape mismatch (ignored): ' + _short(
            [f'{k}: ckpt {a} vs model {b}' for k, a, b in mismatched]), logger=logger, level=30)
    return dict(loaded=sorted(loadable), missing=missing, unexpected=unexpected,
                mismatched=mismatched)


def _arch_of(model) -> str:
    arch = getattr(model, 'arch_name', None)
    return f" (arch {arch!r})" if arch else ''


def _shape_score(sd: Dict[str, torch.Tensor], ref: Dict[str, tuple]) -> int:
    return sum(1 for k, v in sd.items() if k in ref and ref[k] == tuple(v.shape))


#: (class, arch, the arch's entry) -> {key: shape} of its default build
_ARCH_SHAPES: Dict[tuple, Dict[str, tuple]] = {}


def _arch_shapes(cls, arch: str) -> Dict[str, tuple]:
    """The state-dict shapes of ``cls(arch=arch)``, built once per process on
    the meta device (all archs of all families take ~30 s to build)."""
    key = (cls, arch, repr(sorted(cls.arch_zoo[arch].items())))
    if key not in _ARCH_SHAPES:
        with torch.device('meta'):
            sd = cls(arch=arch).state_dict()
        _ARCH_SHAPES[key] = {k: tuple(v.shape) for k, v in sd.items()}
    return _ARCH_SHAPES[key]


def describe_checkpoint(model: nn.Module, sd: Dict[str, torch.Tensor]) -> str:
    """Which registered backbone and arch ``sd`` (in our key layout) fits
    best, by tensors whose key and shape match (models built on the meta
    device, nothing allocated)."""
    from ..registry import BACKBONES
    own_cls = type(model)
    candidates = [(own_cls, a) for a in getattr(own_cls, 'arch_zoo', {})]
    candidates += [(c, a) for c in BACKBONES.values() if c is not own_cls
                   for a in c.arch_zoo]
    best = None
    for cls, arch in candidates:
        try:
            ref = _arch_shapes(cls, arch)
        except Exception:  # noqa: BLE001 - an arch that needs other arguments
            continue
        score = _shape_score(sd, ref)
        if best is None or score > best[0]:
            best = (score, cls.__name__, arch, len(ref))
        if cls is own_cls and score == len(sd):
            break  # a perfect fit of the model's own family
    if not best or best[0] == 0:
        return 'It does not look like any registered backbone and arch.'
    score, name, arch, n_ref = best
    return (f'It looks like {name} arch {arch!r} ({score} of its {len(sd)} tensors match '
            f'that arch\'s {n_ref} by name and shape).')


def _short(items: List[str], n: int = 20) -> str:
    s = ', '.join(items[:n])
    return s + (f', ... ({len(items) - n} more)' if len(items) > n else '')
