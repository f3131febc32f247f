r"""FLOPs and parameters of a config's whole model (backbone, neck, heads) at one
input size, like mmdet's / mmseg's ``tools/analysis_tools/get_flops.py``, with
the scans and recurrences counted by ``mmvisbackbones.utils.count_flops``.

    python tools/analysis/get_flops.py configs/vmamba/mask-rcnn_vmamba-t_fpn_1x_coco.py
    python tools/analysis/get_flops.py configs/vmamba/upernet_vmamba-t_4xb4-160k_ade20k-512x512.py \
        --shape 512 2048
    python tools/analysis/get_flops.py CONFIG --backbone-only --shape 224 224
    python tools/analysis/get_flops.py configs/bevformer/bevformer-tiny_vmamba-t_8xb1-24e_nus.py

FLOPs are multiply-accumulates (MACs), the convention of mmdet, mmseg, fvcore
and the papers ("271G" for Mask R-CNN VMamba-T is 271e9 MACs).  Counted: the
convolutions, matrix products, linear layers and scaled-dot-product attention
(torch's FlopCounterMode, halved) and the selective scans / WKV with their
upstream projects' formulas.  Not counted (as fvcore's default): element-wise
work, norms, softmax, interpolation, grid_sample, RoIAlign and NMS.

What runs is the model's ``forward(inputs, data_samples, mode='tensor')``, as
in mmdet's tool: for a two-stage detector the RPN's proposals (up to
``test_cfg.rpn.max_per_img``, 1000 in the COCO recipes) go through the box head
and the first 100 through the mask head; for a segmentor the decode head (the
auxiliary head is training-only: shown apart, not in the total).  The count
runs on the ``meta`` device (no memory, no compute); a model with ops that have
no meta kernel (RoIAlign, NMS) is counted on the CPU instead, with a note.

Default input: mmdet configs 1280x800 (W x H, mmdet's default; give --shape H W
to change it), mmseg configs their crop size (512x512 for the ADE20K recipes),
mmdet3d BEV configs (BEVFormer) six cameras of nuScenes' 1600x900 scaled by the
config's ``img_scale`` and padded as its data preprocessor pads, with the real
nuScenes camera rig (``static_lidar2img``), so the spatial cross-attention sees
the queries each camera really sees.  A BEV model's deformable attention is
counted by its projections; its bilinear sampling (grid_sample) is not.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, Optional

import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _whole_model  # noqa: E402

CONVENTION = ('FLOPs = multiply-accumulates (MACs), as mmdet/mmseg get_flops and the papers; '
              'not counted: element-wise ops, norms, softmax, interpolation, RoIAlign, NMS')


def _nparams(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_model(model: torch.nn.Module, scope: str, hw, seed: int = 0) -> Dict:
    """Count one forward of ``model`` (on its device) on one random image of
    size ``hw``.  Returns total, per-top-level-module MACs, the auxiliary head's
    MACs (segmentors) and the RoIs the RoI head ran on (two-stage detectors)."""
    from mmvisbackbones.utils import counting_macs
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    cams = (6, ) if scope == 'mmdet3d' else ()  # a BEV model sees six cameras
    x = torch.randn((1, ) + cams + (3, ) + tuple(hw), generator=g).to(device)
    samples = _whole_model.data_samples(scope, 1, hw)
    rois = {}
    hooks = []
    roi_head = getattr(model, 'roi_head', None)
    for name in ('bbox_head', 'mask_head'):
        head = getattr(roi_head, name, None)
        if isinstance(head, torch.nn.Module):
            def hook(module, args, name=name):
                rois.setdefault(name, int(args[0].shape[0]))  # the first call: the RoIs
            hooks.append(head.register_forward_pre_hook(hook))
    model.eval()
    # no parameter needs a gradient here; views of trainable parameters made
    # under no_grad (a query embedding split into position and content) would
    # otherwise trip the FLOP counter's module tracker, which hooks tensors
    # that require grad
    model.requires_grad_(False)
    try:
        with torch.no_grad(), counting_macs(model) as macs:
            model(dict(img=x) if cams else x, samples, mode='tensor')
    finally:
        for h in hooks:
            h.remove()
    out = dict(total=macs.total, by_module=macs.grouped(1), by_op=macs.by_op, rois=rois)
    aux = getattr(model, 'auxiliary_head', None)
    if scope == 'mmseg' and aux is not None:
        with torch.no_grad():
            feats = model.extract_feat(x)
            with counting_macs() as aux_macs:
                aux(feats)
        out['auxiliary_head'] = aux_macs.total
    return out


def run(config: str, shape=None, backbone_only: bool = False, cfg_options: Optional[dict] = None,
        device: str = 'meta', log=print) -> Dict:
    """Everything main() prints, as a dict (for tests and --out)."""
    from mmvisbackbones.utils import count_flops
    cfg, scope = _whole_model.load_config(config, cfg_options,
                                          supported=_whole_model.SUPPORTED + ('mmdet3d', ))
    if shape is None:
        hw, source = _whole_model.default_shape(cfg, scope)
    else:
        hw, source = tuple(shape), '--shape'
    cams = '6x' if scope == 'mmdet3d' else ''
    log(f'input 1x{cams}3x{hw[0]}x{hw[1]} (N x {"cameras x " if cams else ""}C x H x W; '
        f'{source})')
    note = None

    def count(device):
        model = _whole_model.build_model(cfg, scope, device)
        if backbone_only:  # a BEV model runs it on each of its 6 cameras
            per_image = count_flops(_whole_model.backbone_of(model), (1, 3) + tuple(hw))
            return model, dict(total=per_image['total'] * (6 if cams else 1))
        return model, count_model(model, scope, hw)

    try:
        model, result = count(device)
    except (NotImplementedError, RuntimeError, TypeError, ValueError, AssertionError) as e:
        if device != 'meta':
            raise
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else ''
        note = (f'note: the model does not run on the meta device ({type(e).__name__}: '
                f'{reason}); counting on the CPU with real tensors instead (slower; RoIAlign and '
                'NMS, which have no meta kernels, and tensors a model makes on the CPU run '
                'there)')
        log(note)
        device = 'cpu'
        model, result = count(device)

    rows = []
    if backbone_only:
        rows.append(dict(module='backbone', group='backbone', macs=result['total'],
                         params=_nparams(_whole_model.backbone_of(model))))
        total_params = rows[0]['params']
    else:
        by_module = dict(result['by_module'])
        for name, child in model.named_children():
            macs = by_module.pop(name, 0)
            params = _nparams(child)
            if name == 'auxiliary_head':
                rows.append(dict(module=name, group='heads', macs=result.get(name, 0),
                                 params=params, in_total=False))
            elif macs or params:
                rows.append(dict(module=name, group=_whole_model.group_of(name), macs=macs,
                                 params=params))
        own = sum(by_module.values())  # the model's own code and modules outside its tree
        own_params = sum(p.numel() for p in model.parameters(recurse=False))
        if own or own_params:
            rows.append(dict(module='(model itself)', group='heads', macs=own,
                             params=own_params))
        total_params = _nparams(model)
    # FLOPs: what runs at inference; params: every parameter (an auxiliary
    # head's too, as mmseg's get_flops counts them)
    in_total = [r for r in rows if r.get('in_total', True)]
    groups = {}
    for r in rows:
        g = groups.setdefault(r['group'], dict(macs=0, params=0))
        g['macs'] += r['macs'] if r.get('in_total', True) else 0
        g['params'] += r['params']
    summary = dict(config=config, scope=scope, model=cfg.model.type,
                   backbone=cfg.model.backbone.type,
                   input_shape=[1] + ([6] if cams else []) + [3, hw[0], hw[1]],
                   shape_source=source, device=device, note=note, backbone_only=backbone_only,
                   flops=result['total'], params=total_params, rows=rows, groups=groups,
                   rois=result.get('rois', {}), by_op=result.get('by_op', {}),
                   convention='MACs')
    assert sum(r['macs'] for r in in_total) == result['total'], (rows, result['total'])
    return summary


def format_table(s: Dict) -> str:
    lines = [f"{'module':<24}{'group':<10}{'GFLOPs':>10}{'params (M)':>12}"]
    lines.append('-' * len(lines[0]))
    for r in s['rows']:
        extra = '  (training only: FLOPs not in the total)' if not r.get('in_total', True) else ''
        lines.append(f"{r['module']:<24}{r['group']:<10}{r['macs'] / 1e9:>10.3f}"
                     f"{r['params'] / 1e6:>12.2f}{extra}")
    lines.append('-' * len(lines[1]))
    if not s['backbone_only']:
        for g in ('backbone', 'neck', 'heads'):
            if g in s['groups']:
                v = s['groups'][g]
                lines.append(f"{g + ' (all)':<34}{v['macs'] / 1e9:>10.3f}"
                             f"{v['params'] / 1e6:>12.2f}")
    lines.append(f"{'total':<34}{s['flops'] / 1e9:>10.3f}{s['params'] / 1e6:>12.2f}")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='config file (an mmdet detector or an mmseg segmentor)')
    p.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                   help='input H W (one value: square); default: 800 1280 (i.e. 1280x800) for '
                   "mmdet configs, the config's crop size for mmseg configs")
    p.add_argument('--backbone-only', action='store_true',
                   help='count model.backbone alone (exactly count_flops(backbone, shape))')
    p.add_argument('--device', default='meta', choices=['meta', 'cpu'],
                   help="where to count: 'meta' (default; falls back to cpu when an op has no "
                   "meta kernel) or 'cpu'")
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. model.backbone.arch=small')
    p.add_argument('--out', help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) < 32:
            p.error('--shape takes H W (or one side), each >= 32')
        args.shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if not osp.isfile(args.config):
        p.error(f'config file not found: {args.config}')
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('get_flops', log_level='INFO')
    try:
        s = run(args.config, args.shape, args.backbone_only, args.cfg_options, args.device,
                log=logger.info)
    except (FileNotFoundError, _whole_model.ConfigError) as e:
        p.error(str(e))
    print(f"\n{s['model']} with {s['backbone']} ({osp.basename(args.config)}), "
          f"input {'x'.join(map(str, s['input_shape']))}, counted on {s['device']}")
    if s['rois']:
        print('RoI head ran on ' + ', '.join(f'{n} RoIs ({k})' for k, n in s['rois'].items()))
    print(format_table(s))
    print(CONVENTION)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(s, f, indent=1)
    return s


if __name__ == '__main__':
    main()
