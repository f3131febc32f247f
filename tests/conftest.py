import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The Triton kernels are tested on CUDA when there is a GPU, and under
# Triton's interpreter on the CPU otherwise.  Triton decides whether to
# interpret a kernel when the kernel is defined, so set the variable and
# define the kernels before any test runs.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
if importlib.util.find_spec('triton') is not None:
    try:
        import mmvisbackbones.ops.selective_scan.triton_scan  # noqa: F401
    except ModuleNotFoundError:  # torch-only environment: tests/ops/conftest.py copes
        pass


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """Small generated COCO and ADE20K datasets (``<root>/coco``,
    ``<root>/ade``) for the consumer tests; modules that need other sizes
    define their own ``data_root``."""
    from mmvisbackbones.datasets import make_ade_demo, make_coco_demo
    root = tmp_path_factory.mktemp('demo_data')
    make_coco_demo(str(root / 'coco'), num_train=4, num_val=2)
    make_ade_demo(str(root / 'ade'), num_train=4, num_val=2)
    return str(root)
