"""Every zoo backbone inside Mask R-CNN, UperNet and DINO: one CPU training
iteration on the generated data (loss finite, gradients reach the backbone)
and one prediction."""
import pytest

from mm_helpers import demo_cfg, one_iteration_and_prediction
from zoo import ZOO


@pytest.mark.parametrize('backbone', sorted(ZOO))
@pytest.mark.parametrize('kind', ['maskrcnn', 'upernet', 'dino'])
def test_one_training_iteration(kind, backbone, data_root):
    model = one_iteration_and_prediction(demo_cfg(kind, data_root, backbone=backbone), kind)
    assert type(model.backbone).__name__ == backbone
