"""Snapshot of what every config in ``configs/`` builds, to refactor configs
safely: the whole merged config of each file (model, optimizer, schedules,
data pipelines, hooks, evaluators), as canonical JSON, stored gzipped in
``tests/data/config_dumps.json.gz``.  ``tests/test_config_dumps.py`` checks
that today's configs still merge to the snapshot.

    python tools/dev/dump_configs.py            # compare, print what differs
    python tools/dev/dump_configs.py --write    # store a new snapshot

Write a new snapshot only for an intended change of what a config trains,
and say which in the commit.  Needs mmdet, mmseg and mmdet3d (the configs'
``mmdet::`` / ``mmseg::`` bases).
"""
import argparse
import glob
import gzip
import json
import os.path as osp
import sys
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SNAPSHOT = osp.join(ROOT, 'tests', 'data', 'config_dumps.json.gz')


def config_files(root: str = ROOT) -> List[str]:
    """Every user-facing config (``_base_`` fragments are merged into them)."""
    files = glob.glob(osp.join(root, 'configs', '**', '*.py'), recursive=True)
    return sorted(osp.relpath(f, root) for f in files
                  if '_base_' not in osp.relpath(f, root).split(osp.sep))


def _canonical(obj):
    """JSON-able form; tuples become lists, so a tuple-vs-list spelling is
    not a difference (mmengine treats them alike)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return f'<{type(obj).__name__}> {obj!r}'


def dump(path: str, root: str = ROOT) -> Dict:
    """The merged config of ``path`` (relative to ``root``) as canonical JSON data."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(root, path))
    return _canonical(cfg.to_dict())


def dump_all(root: str = ROOT) -> Dict[str, Dict]:
    return {p: dump(p, root) for p in config_files(root)}


def read_snapshot(path: str = SNAPSHOT) -> Dict[str, Dict]:
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        return json.load(f)


def write_snapshot(dumps: Dict[str, Dict], path: str = SNAPSHOT):
    data = json.dumps(dumps, sort_keys=True, indent=1).encode('utf-8')
    # mtime=0: the same configs give the same bytes
    with open(path, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb', mtime=0) as f:
        f.write(data)


def differences(old, new, where: str = '') -> List[str]:
    """Human-readable paths where ``new`` differs from ``old``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            sub = f'{where}.{k}' if where else k
            if k not in new:
                out.append(f'{sub}: removed (was {json.dumps(old[k])[:120]})')
            elif k not in old:
                out.append(f'{sub}: added ({json.dumps(new[k])[:120]})')
            else:
                out += differences(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += differences(a, b, f'{where}[{i}]')
        return out
    if old != new:
        return [f'{where}: {json.dumps(old)[:120]} -> {json.dumps(new)[:120]}']
    return []


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--write', action='store_true', help='store a new snapshot')
    args = p.parse_args(argv)
    dumps = dump_all()
    if args.write:
        write_snapshot(dumps)
        print(f'wrote {len(dumps)} configs to {SNAPSHOT}')
        return 0
    old = read_snapshot()
    diff = differences(old, dumps)
    for line in diff:
        print(line)
    print(f'{len(dumps)} configs, {len(diff)} differences from {SNAPSHOT}')
    return 1 if diff else 0


if __name__ == '__main__':
    sys.exit(main())
