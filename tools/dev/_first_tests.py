"""pytest plugin of ``tools/dev/gpu_suite.py --dry-run``: keep only the first
``MMVB_FIRST_TESTS`` collected tests of each file, so that a dry run of the
ops step takes seconds while still running real tests of every file.

    MMVB_FIRST_TESTS=2 PYTHONPATH=tools/dev pytest -p _first_tests tests/ops
"""
import os


def pytest_collection_modifyitems(config, items):
    n = int(os.environ.get('MMVB_FIRST_TESTS', '0'))
    if n <= 0:
        return
    kept, seen, dropped = [], {}, []
    for item in items:
        f = str(item.path)
        seen[f] = seen.get(f, 0) + 1
        (kept if seen[f] <= n else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
