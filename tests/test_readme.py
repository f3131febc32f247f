"""The README's model-zoo table is what tools/model_zoo_table.py generates."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_model_zoo_table_is_current():
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import model_zoo_table
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert model_zoo_table.render(readme) == readme, \
        'README model table is stale: run python tools/model_zoo_table.py --write'


def test_readme_commands_exist():
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert 'bash tools/run_demo.sh' in readme and 'bash tools/run_tests.sh' in readme
    with open(osp.join(ROOT, '.ci', 'run')) as f:
        assert 'bash tools/run_tests.sh' in f.read()
