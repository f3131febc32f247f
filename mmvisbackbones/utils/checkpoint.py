"""Loading pretrained backbone weights: upstream releases and our own checkpoints.

A checkpoint is untrusted input, so it is read with ``torch.load(...,
weights_only=True)``; the few non-tensor types that mmengine's Runner writes
into its checkpoints are allow-listed in :mod:`mmvisbackbones.utils.serialization`.
"""
import os
import os.path as osp
import pickle
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger, print_log

from .serialization import register_safe_globals

_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')


class CheckpointMismatchError(ValueError):
    """Raised when no parameter of a checkpoint fits the model."""


class CheckpointVariantError(CheckpointMismatchError):
    """A checkpoint of another variant or size of the model's family (its
    message names both), raised before anything is loaded."""


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
    raised with examples of both sides' keys.

    Before converting, the family's ``detect_checkpoint_variant`` (if the
    model's class has one) reads the upstream variant and size from the
    checkpoint's own keys and shapes (:func:`check_checkpoint_variant`): a
    variant the model cannot take raises :class:`CheckpointVariantError` at
    once (whatever ``strict``), and with ``strict`` so does a checkpoint of
    another size than the model's named arch even when every tensor of the
    model is there (a deeper checkpoint's extra blocks would otherwise be
    ignored as unexpected keys); both messages name the checkpoint's variant
    and size and the model's arch.  Returns a report dict.
    """
    logger = logger or MMLogger.get_current_instance()
    sd = strip_prefixes(extract_state_dict(load_checkpoint_file(checkpoint)), prefix)
    name = type(model).__name__
    # the variant / size the checkpoint's own (upstream) keys and shapes show,
    # before conversion renames them; a variant the model cannot take raises here
    variant = check_checkpoint_variant(model, sd, checkpoint)
    conflict = bool(variant and variant['conflict'])
    if converter is not None:
        sd = converter(sd, model)
    loadable, missing, unexpected, mismatched = match_state_dict(model, sd)
    described = (lambda: variant_sentence(variant, model)) if variant else \
        (lambda: describe_checkpoint(model, sd))
    if not loadable and not mismatched:
        raise CheckpointMismatchError(
            f'no parameter of checkpoint {checkpoint!r} matches {name}: '
            f'checkpoint keys (after conversion) look like {sorted(sd)[:5]}, '
            f'the model expects keys like {list(model.state_dict())[:5]}. '
            f'{described()}')
    optional = tuple(getattr(model, 'checkpoint_optional_prefixes', lambda: ())())
    required_missing = [k for k in missing if not k.startswith(optional)] if optional else missing
    if strict and (conflict or mismatched or required_missing):
        parts = []
        if mismatched:
            parts.append(f'{len(mismatched)} shape mismatches (' + _short(
                [f'{k}: checkpoint {a} vs model {b}' for k, a, b in mismatched], 6) + ')')
        if required_missing:
            parts.append(f'{len(required_missing)} of the model\'s tensors missing from it ('
                         + _short(required_missing, 6) + ')')
        found = f' {"; ".join(parts)}.' if parts else ''
        advice = (_variant_advice(variant, model) if conflict else
                  'Pick the config of the checkpoint\'s arch')
        raise (CheckpointVariantError if conflict else CheckpointMismatchError)(
            f'checkpoint {checkpoint!r} does not fit {name}{_arch_of(model)}. '
            f'{described()}{found} Nothing was loaded. {advice}, or pass '
            "init_cfg=dict(type='Pretrained', checkpoint=..., strict=False) to load the "
            'tensors that fit and leave the rest at their init.')
    if conflict:
        print_log(f'{name}: {variant_sentence(variant, model)} strict=False: loading the '
                  'tensors that fit.', logger=logger, level=30)
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


# ------------------------------------------------------------ variants
# Each family's ``detect_<family>_variant(state_dict)`` (beside its converter)
# reads the variant and size of a checkpoint from its keys and shapes, in the
# upstream layouts and in ours, and returns :func:`variant_info`'s dict (None
# for weights of another family).  The model class exposes it as
# ``detect_checkpoint_variant``; :func:`load_pretrained` compares the result
# with the model before converting anything.

#: keys whose int value means "this many channels in stage 0, doubled per stage"
_PER_STAGE_KEYS = ('dims', 'embed_dims')


def blocks_by_stage(state_dict: Dict[str, torch.Tensor], pattern,
                    first_stage: int = 0) -> Dict[int, Dict[int, Dict[str, torch.Tensor]]]:
    """``{stage: {block: {rest of the key: tensor}}}`` of the keys matching
    ``pattern`` (a compiled regex with the groups stage, block, rest); stage
    numbers start at ``first_stage`` in the keys (e.g. PVT's ``block1``)."""
    out: Dict[int, Dict[int, Dict[str, torch.Tensor]]] = {}
    for key, value in state_dict.items():
        m = pattern.match(key)
        if m:
            stage, block = int(m.group(1)) - first_stage, int(m.group(2))
            out.setdefault(stage, {}).setdefault(block, {})[m.group(3)] = value
    return out


#: a plain (single-resolution) model's blocks: upstream's ``layers.{i}``, ours
#: ``stages.{s}.{j}`` (the blocks grouped by output)
_UP_LAYER = re.compile(r'^layers\.(\d+)\.(.+)$')
_OUR_LAYER = re.compile(r'^stages\.(\d+)\.(\d+)\.(.+)$')


def plain_layers(state_dict: Dict[str, torch.Tensor]):
    """``({layer: {rest of the key: tensor}}, upstream)`` of a plain model's
    checkpoint (Vim, Vision-RWKV): upstream's ``layers.{i}`` blocks, else ours,
    numbered in order across the stages."""
    layers: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        m = _UP_LAYER.match(key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
    if layers:
        return layers, True
    stages = blocks_by_stage(state_dict, _OUR_LAYER)
    return dict(enumerate(stages[s][j] for s in sorted(stages) for j in sorted(stages[s]))), False


def stage_depths(blocks: Dict[int, Dict[int, dict]]) -> Optional[tuple]:
    """Blocks per stage of :func:`blocks_by_stage`'s result (None unless the
    stages are 0..n-1)."""
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        return None
    return tuple(max(blocks[i]) + 1 for i in range(len(blocks)))


def first_block_widths(blocks: Dict[int, Dict[int, Dict[str, torch.Tensor]]],
                       key: str) -> Optional[List[int]]:
    """Each stage's width: dim 0 of ``key`` in the stage's first block of
    :func:`blocks_by_stage`'s result (None when a stage's first block lacks it)."""
    widths = []
    for i in sorted(blocks):
        t = blocks[i][min(blocks[i])].get(key)
        if t is None:
            return None
        widths.append(t.shape[0])
    return widths


def stage_widths(dims: Sequence[int]):
    """Per-stage widths in the arch tables' convention: the first width (an
    int) when each stage doubles the previous one, else the tuple."""
    dims = tuple(int(d) for d in dims)
    return dims[0] if all(d == dims[0] * 2**i for i, d in enumerate(dims)) else dims


def _norm_value(key: str, value, like=None):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_norm_value('', v) for v in value)
    if isinstance(value, (int, float)):
        if key in _PER_STAGE_KEYS and isinstance(like, (list, tuple)):
            return tuple(float(value * 2**i) for i in range(len(like)))
        return round(float(value), 4)
    return value


def same_value(key: str, a, b) -> bool:
    """``a == b`` for arch values: numbers as floats, sequences elementwise,
    a stage-0 width (int) against the per-stage tuple it doubles into."""
    return _norm_value(key, a, b) == _norm_value(key, b, a)


def format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ','.join(format_value(v) for v in value)
    if isinstance(value, float):
        return f'{value:g}'
    return str(value)


def format_values(values: Dict[str, object]) -> str:
    return ', '.join(f'{k} {format_value(v)}' for k, v in values.items())


def variant_info(family: str, arch_zoo: Dict[str, dict], params: Dict[str, object], *,
                 variant: str, layout: str, label: Optional[str] = None,
                 extra: Optional[Dict[str, object]] = None, convertible: bool = True,
                 model_layout: Optional[str] = None, hint: Optional[str] = None,
                 labels: Optional[Dict[str, str]] = None) -> dict:
    """What a family's detector returns for a checkpoint of that family.

    ``params``: arch values read from the weights, in the arch table's
    convention (None values are dropped: not readable from these weights);
    compared with the model's (its ``arch`` entry, or an attribute of the same
    name for build arguments such as ``conv_bias``).  ``extra``: facts shown
    but not compared (a window size the converter resizes, a class token it
    can drop).  ``variant`` / ``layout``: the upstream variant and its key
    layout in words; ``label``: upstream's name of this size if known;
    ``convertible=False`` with a ``hint`` for a variant the model cannot
    take; ``model_layout``: what the model implements, in words; ``labels``:
    upstream's names of the arch table's archs (used when ``label`` is None).

    Adds ``arch`` (the first arch of ``arch_zoo`` with these values, or None),
    ``archs`` (all of them), ``details`` (layout and values in words) and
    ``facts`` (the checkpoint in words: label or family, then the details)."""
    params = {k: v for k, v in params.items() if v is not None}
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    archs = [name for name, entry in arch_zoo.items()
             if params and any(k in entry for k in params)
             and all(same_value(k, entry[k], v) for k, v in params.items() if k in entry)]
    label = label or (labels or {}).get(archs[0] if archs else None)
    values = format_values({**params, **extra})
    details = layout + ('; ' + values if values else '')
    return dict(family=family, variant=variant, layout=layout, label=label, params=params,
                extra=extra, convertible=convertible, model_layout=model_layout, hint=hint,
                arch=archs[0] if archs else None, archs=archs, details=details,
                facts=f'{label or family} ({details})')


_MISSING = object()


def _model_value(model: nn.Module, key: str):
    arch = getattr(model, 'arch', None)
    if isinstance(arch, dict) and key in arch:
        return arch[key]
    return getattr(model, key, _MISSING)


def _model_facts(model: nn.Module, info: dict, layout: bool = False) -> str:
    values = {}
    for key in list(info['params']) + list(info['extra']):
        v = _model_value(model, key)
        if v is not _MISSING and not isinstance(v, nn.Module):
            values[key] = v
    text = format_values(values)
    if layout and info.get('model_layout'):
        text = info['model_layout'] + ('; ' + text if text else '')
    return text


def check_checkpoint_variant(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                             checkpoint: str = '<state dict>') -> Optional[dict]:
    """Compare the variant and size ``state_dict`` (keys as saved, prefix
    stripped, not converted) shows with ``model``.

    Returns None when the model's family has no detector or the weights are
    not of its family; else the detector's dict plus ``diff`` (the compared
    values that differ) and ``conflict`` (a difference with a model built from
    a named arch: a custom arch dict may intend to differ, so it is only
    described when the shapes do not fit either).  Raises
    :class:`CheckpointVariantError` naming both for a variant the model cannot
    take at all (another key layout or block design)."""
    detect = getattr(type(model), 'detect_checkpoint_variant', None)
    info = detect(state_dict) if detect is not None else None
    if not info:
        return None
    name = type(model).__name__
    arch = getattr(model, 'arch_name', None)
    if not info['convertible']:
        hint = info['hint'] or "pick a checkpoint of the model's variant"
        raise CheckpointVariantError(
            f'checkpoint {checkpoint!r} is {info["facts"]}; the model is {name} '
            f'{_arch_words(arch)} ({_model_facts(model, info, layout=True)}). These variants '
            f'are not convertible: {hint}. Nothing was loaded.')
    diff = [k for k, v in info['params'].items()
            if _model_value(model, k) is not _MISSING
            and not same_value(k, v, _model_value(model, k))]
    if arch in info['archs']:
        info = dict(info, arch=arch)
    return dict(info, diff=diff, conflict=bool(diff) and bool(arch) and arch != 'custom')


def _arch_words(arch: Optional[str]) -> str:
    return f'arch {arch!r}' if arch and arch != 'custom' else 'with a custom arch dict'


def variant_sentence(info: dict, model: nn.Module) -> str:
    """The checkpoint's variant and size next to the model's, in words."""
    arch = getattr(model, 'arch_name', None)
    if info['arch']:
        label = f'{info["label"]}, ' if info['label'] else ''
        ckpt = f'It looks like {info["family"]} arch {info["arch"]!r} ({label}{info["details"]})'
    else:
        ckpt = (f'It looks like {info["facts"]}, which is no arch of {type(model).__name__}\'s '
                f'table ({", ".join(getattr(type(model), "arch_zoo", {}))})')
    mdl = (f'the model\'s arch is {arch!r}' if arch and arch != 'custom'
           else 'the model has a custom arch dict')
    mdl += f' ({_model_facts(model, info)})'
    if info['diff']:
        return f'{ckpt}, but {mdl}; they differ in {", ".join(info["diff"])}.'
    return f'{ckpt}, the same size as the model: {mdl}.'


def _variant_advice(info: dict, model: nn.Module) -> str:
    zoo = getattr(type(model), 'arch_zoo', {})
    arch_keys = set().union(*zoo.values()) if zoo else set()
    kwargs = [f'{k}={info["params"][k]!r}' for k in info['diff'] if k not in arch_keys]
    if info['arch']:
        build = f'arch={info["arch"]!r}'
    else:
        build = 'a custom arch dict with ' + ', '.join(
            f'{k}={v!r}' for k, v in info['params'].items() if k in arch_keys)
        rest = sorted(set.intersection(*map(set, zoo.values())) - set(info['params'])) \
            if zoo else []
        if rest:
            build += f' (and {", ".join(rest)})'
    return f'Build the model with {build}' + (f' and {", ".join(kwargs)}' if kwargs else '')
