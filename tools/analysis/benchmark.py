r"""Throughput (images/s) and peak memory of a config's whole model, or of a
backbone by registry name, like mmdet's ``tools/analysis_tools/benchmark.py``.

    python tools/analysis/benchmark.py configs/vmamba/mask-rcnn_vmamba-t_fpn_1x_coco.py \
        --device cuda --batch 2
    python tools/analysis/benchmark.py --model vmamba_tiny --shape 512 512 --mode train
    python tools/analysis/benchmark.py configs/demo/upernet_vmamba-demo_ade-demo.py \
        --repeat 10 --out bench.json

What is timed, per iteration (random weights; a batch of ``--batch`` random
images of ``--shape``):

* a config, ``--mode infer``: ``model.test_step(data)`` under ``torch.no_grad()``,
  i.e. the data preprocessor (normalise, pad), the forward and the
  post-processing (NMS, mask pasting), as a test loop runs it.  The images are
  uint8 tensors already at the input size, with data samples carrying their
  meta (img_shape = ori_shape, scale factor 1).  A detector's box score
  threshold is set to 0 (``test_cfg.rcnn.score_thr`` / ``test_cfg.score_thr``):
  random weights score every box near 1/num_classes, under the recipes' 0.05,
  so nothing would reach the mask head; at 0 each image keeps
  ``max_per_img`` detections (100 in the COCO recipes), the load of a trained
  model.  ``--keep-test-cfg`` keeps the config's thresholds.
* a config, ``--mode train``: ``model.train_step(data, optim_wrapper)`` with
  the config's optimizer (forward, losses, backward, step) on random ground
  truth (3 boxes with masks per image / a random label map).
* ``--model NAME``: the backbone's forward (``infer``, no grad), or forward,
  ``sum(out.mean())`` backward and an AdamW step (``train``).

``--warmup`` iterations are run first and not timed; then ``--repeat``
iterations are timed one by one (CUDA events on a GPU, ``perf_counter`` on the
CPU) and the median is reported with the min and max.  Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed iterations; on the CPU the
process's peak resident set size (VmHWM of /proc/self/status), reset before the
timed iterations where the kernel allows it (else it is the peak since the
process started, imports and model building included: the summary says which).
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Callable, Dict, Optional

import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _whole_model  # noqa: E402


# ---------------------------------------------------------------- memory (CPU)
def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``,
    Linux >= 4.0); False where that is not allowed."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ the steps
def _random_images(n: int, hw, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, ) + tuple(hw), generator=g, dtype=torch.uint8)
            for _ in range(n)]


def _quietly(fn, *args):
    """``fn(*args)`` without mmengine's per-parameter INFO reports
    (``init_weights()``, the paramwise optimizer options), which go to the
    console when the logger has no log file."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return fn(*args)
    finally:
        logger.setLevel(level)


def config_step(args, log) -> Dict:
    """(step callable, description) for a config's model."""
    cfg, scope = _whole_model.load_config(args.config, args.cfg_options)
    hw = tuple(args.shape) if args.shape else _whole_model.default_shape(cfg, scope)[0]
    overrides = {}
    if scope == 'mmdet' and args.mode == 'infer' and not args.keep_test_cfg:
        test_cfg = cfg.model.get('test_cfg') or {}
        for path, node in (('test_cfg.rcnn', test_cfg.get('rcnn')), ('test_cfg', test_cfg)):
            if isinstance(node, dict) and 'score_thr' in node:
                overrides[f'{path}.score_thr'] = (node['score_thr'], 0.0)
                node['score_thr'] = 0.0
    from mmengine.model import revert_sync_batchnorm
    # one process: SyncBN (the recipes' norm) becomes BN, as mmengine's Runner does
    model = revert_sync_batchnorm(_whole_model.build_model(cfg, scope, 'cpu'))
    _quietly(model.init_weights)  # the heads' own init (e.g. RPN / box heads, std 0.01)
    model = model.to(args.device)
    with_mask = scope == 'mmdet' and bool((cfg.model.get('roi_head') or {}).get('mask_head'))
    samples = _whole_model.data_samples(
        scope, args.batch, hw, with_gt=args.mode == 'train',
        num_classes=_whole_model.num_classes(cfg, scope), with_mask=with_mask, seed=args.seed)
    data = dict(inputs=_random_images(args.batch, hw, args.seed), data_samples=samples)
    outputs = {}
    if args.mode == 'infer':
        model.eval()

        def step():
            with torch.no_grad():
                preds = model.test_step(data)
            if scope == 'mmdet':
                outputs['detections_per_image'] = [len(p.pred_instances) for p in preds]
    else:
        from mmengine.optim import build_optim_wrapper
        model.train()
        optim_wrapper = _quietly(build_optim_wrapper, model, cfg.optim_wrapper)

        def step():
            log_vars = model.train_step(data, optim_wrapper)
            outputs['loss'] = float(torch.as_tensor(log_vars['loss']).detach())
    name = f"{cfg.model.type} with {cfg.model.backbone.type} ({osp.basename(args.config)})"
    return dict(step=step, name=name, hw=hw, scope=scope, overrides=overrides, outputs=outputs,
                params=sum(p.numel() for p in model.parameters()))


def backbone_step(args, log) -> Dict:
    import mmvisbackbones
    net = mmvisbackbones.build_backbone(args.model).to(args.device)
    hw = tuple(args.shape) if args.shape else (224, 224)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn((args.batch, 3) + hw, generator=g).to(args.device)
    outputs = {}
    if args.mode == 'infer':
        net.eval()

        def step():
            with torch.no_grad():
                outs = net(x)
            outputs['out_shapes'] = [list(o.shape) for o in outs]
    else:
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            outs = net(x)
            loss = sum(o.float().mean() for o in outs)
            loss.backward()
            opt.step()
            outputs['loss'] = float(loss.detach())
    return dict(step=step, name=args.model, hw=hw, scope=None, overrides={}, outputs=outputs,
                params=sum(p.numel() for p in net.parameters()))


# ------------------------------------------------------------------- timing
def time_steps(step: Callable, device: torch.device, warmup: int, repeat: int,
               log) -> Dict:
    """Warm up, then time ``repeat`` calls one by one; the peak memory of the
    timed calls."""
    from mmengine.utils import ProgressBar
    log(f'warm-up: {warmup} iteration(s)')
    for _ in range(warmup):
        step()
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        mem = dict(kind='torch.cuda.max_memory_allocated')
    else:
        reset = reset_peak_rss()
        mem = dict(kind='peak RSS (VmHWM) over the timed iterations' if reset else
                   'peak RSS (VmHWM) since the process started (clear_refs not allowed)',
                   rss_before_mib=(_proc_status_kib('VmRSS') or 0) / 1024)
    log(f'timing: {repeat} iteration(s)')
    times = []
    bar = ProgressBar(repeat)
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        bar.update()
    sys.stdout.write('\n')
    if cuda:
        mem['peak_mib'] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        mem['peak_mib'] = (_proc_status_kib('VmHWM') or 0) / 1024
    return dict(times_ms=times, median_ms=statistics.median(times), min_ms=min(times),
                max_ms=max(times), memory=mem)


def run(args, log=print) -> Dict:
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise _whole_model.ConfigError(f'--device {args.device} asked for but CUDA is not '
                                       'available')
    torch.manual_seed(args.seed)
    bench = config_step(args, log) if args.config else backbone_step(args, log)
    for k, (old, new) in bench['overrides'].items():
        log(f'set {k} = {new} (config: {old}) so random weights keep max_per_img boxes; '
            '--keep-test-cfg keeps it')
    H, W = bench['hw']
    log(f"{bench['name']}: mode {args.mode}, batch {args.batch}x3x{H}x{W}, device {device}")
    t = time_steps(bench['step'], device, args.warmup, args.repeat, log)
    return dict(
        model=bench['name'], config=args.config, registry_name=args.model, mode=args.mode,
        device=str(device),
        device_name=(torch.cuda.get_device_name(device) if device.type == 'cuda' else
                     platform.processor() or platform.machine()),
        threads=torch.get_num_threads(), torch=torch.__version__, batch=args.batch,
        input_shape=[args.batch, 3, H, W], warmup=args.warmup, repeat=args.repeat,
        images_per_s=args.batch * 1e3 / t['median_ms'], **t,
        params=bench['params'], test_cfg_overrides={k: v[1] for k, v in
                                                    bench['overrides'].items()},
        outputs=bench['outputs'])


def summary(r: Dict) -> str:
    m = r['memory']
    lines = [
        f"model      {r['model']}  [{r['params'] / 1e6:.2f} M params, random weights]",
        f"run        {r['mode']} on {r['device']} ({r['device_name']}, {r['threads']} threads, "
        f"torch {r['torch']}), input {'x'.join(map(str, r['input_shape']))}",
        f"time       median {r['median_ms']:.1f} ms per batch (min {r['min_ms']:.1f}, "
        f"max {r['max_ms']:.1f}) over {r['repeat']} runs after {r['warmup']} warm-up",
        f"throughput {r['images_per_s']:.2f} images/s (batch / median)",
        f"memory     {m['peak_mib']:.0f} MiB: {m['kind']}"
        + (f" (RSS {m['rss_before_mib']:.0f} MiB before)" if 'rss_before_mib' in m else ''),
    ]
    if r['test_cfg_overrides']:
        lines.append('test_cfg   ' + ', '.join(f'{k}={v}'
                                                for k, v in r['test_cfg_overrides'].items()))
    if 'detections_per_image' in r['outputs']:
        lines.append(f"outputs    detections per image: {r['outputs']['detections_per_image']}")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', help='config file (mmdet detector or mmseg segmentor)')
    p.add_argument('--model', help='or a backbone registry name instead of a config, e.g. '
                   'vmamba_tiny (see mmvisbackbones.list_models())')
    p.add_argument('--batch', type=int, default=1, help='images per iteration (default 1)')
    p.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                   help='input H W (one value: square); default: 800 1280 for mmdet configs, '
                   "the crop size for mmseg configs, 224 224 for --model")
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations first (default 2)')
    p.add_argument('--repeat', type=int, default=10, help='timed iterations (default 10)')
    p.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda' or 'cuda:N'")
    p.add_argument('--mode', choices=['infer', 'train'], default='infer',
                   help='infer: test_step / no-grad forward; train: train_step / '
                   'forward+backward+step')
    p.add_argument('--keep-test-cfg', action='store_true',
                   help="keep the detector's score thresholds (default: set to 0, see below)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, e.g. model.backbone.arch=small')
    p.add_argument('--out', help='also write the results to this JSON file')
    args = p.parse_args(argv)
    if (args.config is None) == (args.model is None):
        p.error('give a config file or --model NAME (one of them)')
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0:
        p.error('--batch and --repeat must be >= 1, --warmup >= 0')
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) < 32:
            p.error('--shape takes H W (or one side), each >= 32')
        args.shape = args.shape * 2 if len(args.shape) == 1 else args.shape
    if args.config is not None and not osp.isfile(args.config):
        p.error(f'config file not found: {args.config}')
    if args.model is not None:
        import mmvisbackbones
        names = mmvisbackbones.list_models()
        if args.model not in names:
            p.error(f'unknown model {args.model!r}; available: {", ".join(names)}')
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('benchmark', log_level='INFO')
    try:
        r = run(args, log=logger.info)
    except (FileNotFoundError, _whole_model.ConfigError) as e:
        p.error(str(e))
    except ValueError as e:
        if 'Expected more than 1 value per channel when training' not in str(e):
            raise
        p.error(f'{e}: a BatchNorm on a 1x1 map (e.g. the pyramid pooling of UPerHead) '
                'cannot train on one image; use --batch 2 or more')
    print(summary(r))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(r, f, indent=1)
        logger.info(f'wrote {args.out}')
    return r


if __name__ == '__main__':
    main()
