#!/usr/bin/env python
"""Export an mmvisbackbones backbone to ONNX and verify it with onnxruntime.

    python tools/deploy/export_onnx.py --backbone VMamba --arch tiny --out vmamba_t.onnx
    python tools/deploy/export_onnx.py --config configs/swin/mask-rcnn_swin-t_fpn_1x_coco.py \\
        --checkpoint work_dirs/mask-rcnn_swin-t/epoch_12.pth --dynamic --shape 800 1344

Only the backbone is exported (input ``input`` (N, 3, H, W), outputs
``out0 .. outK``: one NCHW map per pyramid level); whole mmdet / mmseg
detectors and segmentors (necks, heads, NMS) are out of scope.  The file is
then run with onnxruntime (CPU) and every output compared with PyTorch in
fp32 at the export shape and, with ``--dynamic``, at a second shape (one more
sample, odd H and W; ``--check-shape``).  An output passes when
``max|onnx - torch| <= atol + rtol * max|torch|`` (default rtol 1e-4,
atol 1e-5).  The exit status is nonzero when the export or the check fails.
Needs ``pip install onnx onnxruntime``.
"""
import argparse
import os.path as osp
import sys
import time
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    from mmvisbackbones.deploy.onnx import DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL
    p = argparse.ArgumentParser(
        description='Export an mmvisbackbones backbone (not a whole detector or segmentor: '
        'necks, heads and post-processing are out of scope) to ONNX with the TorchScript '
        'exporter and verify it with onnxruntime against PyTorch.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--backbone', help='registry name (VMamba, Vim, VisionRWKV, MLLA, Swin, '
                     'PVTv2, BiFormer) or a plain-PyTorch name such as vmamba_tiny')
    src.add_argument('--config', help="mmdet / mmseg config: its model.backbone is exported "
                     "(the config's custom_imports are honoured)")
    p.add_argument('--arch', default='tiny', help='arch with --backbone')
    p.add_argument('--backbone-args', nargs='+', default=None, metavar='KEY=VALUE',
                   help='extra constructor arguments with --backbone, e.g. out_indices=[1,2,3]')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='override config entries with --config')
    p.add_argument('--checkpoint', help='weights to load: an upstream release, or an mmdet / '
                   'mmseg / plugin checkpoint (the backbone. entries are taken); default: '
                   "the config's init_cfg checkpoint if it exists, else random weights")
    p.add_argument('--shape', nargs=2, type=int, default=[224, 224], metavar=('H', 'W'),
                   help='input height and width traced')
    p.add_argument('--batch', type=int, default=1, help='batch size traced')
    p.add_argument('--dynamic', action='store_true',
                   help='dynamic batch, height and width (checked at a second shape)')
    p.add_argument('--check-shape', nargs=2, type=int, default=None, metavar=('H', 'W'),
                   help='H W of the second check of a dynamic export (batch: --batch + 1); '
                   'default about 7/8 H and 5/4 W, odd')
    p.add_argument('--strict-dynamic', action='store_true',
                   help='with --dynamic: fail when the dynamic graph does not hold at the '
                   'second shape (default: say why and write a static graph instead)')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset')
    p.add_argument('--out', help='output .onnx file (default work_dirs/onnx/<name>.onnx)')
    p.add_argument('--rtol', type=float, default=DEFAULT_RTOL)
    p.add_argument('--atol', type=float, default=DEFAULT_ATOL)
    p.add_argument('--no-verify', action='store_true', help='skip the onnxruntime check')
    args = p.parse_args(argv)
    if args.check_shape is not None and not args.dynamic:
        p.error('--check-shape checks a dynamic export: add --dynamic')
    if args.strict_dynamic and not args.dynamic:
        p.error('--strict-dynamic only applies with --dynamic')
    if args.backbone_args and not args.backbone:
        p.error('--backbone-args goes with --backbone (use --cfg-options with --config)')
    if args.cfg_options and not args.config:
        p.error('--cfg-options goes with --config (use --backbone-args with --backbone)')
    return args


def _key_values(items):
    from mmengine.config import DictAction
    parsed = {}
    for item in items or ():
        if '=' not in item:
            raise SystemExit(f'error: expected KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def build_from_registry(args):
    import mmvisbackbones
    kwargs = _key_values(args.backbone_args)
    if args.backbone in mmvisbackbones.BACKBONES:
        model = mmvisbackbones.BACKBONES[args.backbone](arch=args.arch, **kwargs)
        return model, f'{args.backbone}_{args.arch}', None
    if args.backbone in mmvisbackbones.list_models():
        return mmvisbackbones.build_backbone(args.backbone, **kwargs), args.backbone, None
    raise SystemExit(f'error: unknown backbone {args.backbone!r}; registry names: '
                     f'{", ".join(sorted(mmvisbackbones.BACKBONES))}; plain names: '
                     f'{", ".join(mmvisbackbones.list_models())}')


def build_from_config(args):
    from mmengine.config import Config
    from mmengine.registry import MODELS
    cfg = Config.fromfile(args.config)  # imports the config's custom_imports
    if args.cfg_options:
        cfg.merge_from_dict(_key_values(args.cfg_options))
    import mmvisbackbones
    bb = cfg.get('model', {}).get('backbone')
    if bb is None:
        raise SystemExit(f'error: {args.config} has no model.backbone')
    bb = bb.to_dict() if hasattr(bb, 'to_dict') else dict(bb)
    kind = bb.get('type')
    if kind not in mmvisbackbones.BACKBONES:
        raise SystemExit(f'error: {args.config}: model.backbone.type={kind!r} is not an '
                         f'mmvisbackbones backbone ({", ".join(sorted(mmvisbackbones.BACKBONES))});'
                         ' this tool exports those only')
    init_cfg = bb.pop('init_cfg', None)
    model = MODELS.build(bb)
    return model, osp.splitext(osp.basename(args.config))[0], init_cfg


def load_weights(model, args, init_cfg):
    from mmvisbackbones.utils.checkpoint import load_pretrained
    name = type(model).__name__
    if args.checkpoint:
        load_pretrained(model, args.checkpoint, converter=type(model).convert_checkpoint)
        return f'loaded {args.checkpoint}'
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        ckpt = init_cfg.get('checkpoint')
        if ckpt and osp.isfile(ckpt):
            load_pretrained(model, ckpt, converter=type(model).convert_checkpoint,
                            prefix=init_cfg.get('prefix'), strict=init_cfg.get('strict', True))
            return f"loaded the config's init_cfg checkpoint {ckpt}"
        return (f"RANDOM weights: the config's init_cfg checkpoint {ckpt!r} is not there "
                f'(pass --checkpoint to export trained weights)')
    return f'RANDOM weights ({name} as constructed; pass --checkpoint to export trained weights)'


def main(argv=None):
    args = parse_args(argv)
    from mmvisbackbones.deploy.onnx import (OnnxExportError, OnnxVerificationError,
                                            export_backbone)

    def say(msg):
        print(f'[export_onnx] {msg}', flush=True)

    t0 = time.time()
    model, name, init_cfg = build_from_config(args) if args.config else build_from_registry(args)
    n_params = sum(p.numel() for p in model.parameters())
    say(f'built {type(model).__name__} ({name}): {n_params / 1e6:.2f}M parameters, outputs '
        f'channels {getattr(model, "out_channels", "?")} strides '
        f'{getattr(model, "out_strides", "?")}')
    say(f'weights: {load_weights(model, args, init_cfg)}')
    out = args.out or osp.join('work_dirs', 'onnx', f'{name}.onnx')
    in_ch = getattr(model, 'in_channels', 3)
    shape = (args.batch, in_ch, *args.shape)
    check = None
    if args.check_shape is not None:
        check = (args.batch + 1, in_ch, *args.check_shape)
    say(f'exporting to {out}: input {"x".join(map(str, shape))}, opset {args.opset}, '
        f'{"dynamic batch/height/width" if args.dynamic else "static shapes"} '
        '(torch.onnx.export, TorchScript exporter)')
    # the fallback is reported below, in the tool's own words
    warnings.filterwarnings('ignore', message=r'.*dynamic ONNX export failed')
    try:
        report = export_backbone(model, out, shape, dynamic=args.dynamic, opset=args.opset,
                                 verify=not args.no_verify, second_shape=check, rtol=args.rtol,
                                 atol=args.atol, allow_static_fallback=not args.strict_dynamic)
    except (OnnxExportError, OnnxVerificationError) as e:
        print(f'[export_onnx] FAILED ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
        return 1
    if report.fallback_reason:
        say(f'WARNING: the dynamic export does not hold, so a STATIC graph '
            f'({"x".join(map(str, shape))} only) was written and verified instead '
            f'(--strict-dynamic makes this an error): {report.fallback_reason}')
    if report.checks:
        say('onnxruntime (CPUExecutionProvider) vs PyTorch eager fp32, pass: '
            f'max|onnx-torch| <= {report.atol:g} + {report.rtol:g} * max|torch|')
        print(report.table(), flush=True)
    else:
        say('not verified (--no-verify)')
    size = osp.getsize(out) / 2**20
    say(f'OK: {report.summary()}')
    say(f'wrote {out} ({size:.1f} MiB) in {time.time() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
