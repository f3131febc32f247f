#!/usr/bin/env python
"""Re-save a trusted checkpoint with its weights only.

Some released classification checkpoints carry training objects beside the
weights (a yacs ``config``, an ``argparse.Namespace`` of ``args``, an
optimizer), which ``torch.load(weights_only=True)`` refuses.  Loading those
runs arbitrary pickled code, so it is never done implicitly: if you trust
the file, this tool loads it once with ``weights_only=False`` and writes
``{'state_dict': <tensors>}``, which every backbone of this package loads.

    python tools/clean_checkpoint.py MLLA_T.pth checkpoints/MLLA_T.pth --trust
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='the released checkpoint')
    p.add_argument('dst', help='where to write the weights-only copy')
    p.add_argument('--trust', action='store_true',
                   help='confirm that you trust SRC (it is unpickled without restrictions)')
    args = p.parse_args(argv)
    if not args.trust:
        p.error('unpickling SRC can run arbitrary code; pass --trust if you trust the file')
    if not osp.isfile(args.src):
        p.error(f'checkpoint not found: {args.src}')
    import torch
    from mmvisbackbones.utils import extract_state_dict
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    sd = extract_state_dict(ckpt)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    dropped = sorted(set(sd) - set(tensors))
    if not tensors:
        raise SystemExit(f'{args.src}: no tensors found under state_dict/model/bare keys')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': tensors}, args.dst)
    print(f'wrote {len(tensors)} tensors to {args.dst}' +
          (f'; dropped non-tensor entries {dropped}' if dropped else ''))


if __name__ == '__main__':
    main()
