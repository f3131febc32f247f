"""Every zoo backbone inside Mask R-CNN, UperNet and DINO: one CPU training
iteration on the generated data (loss finite, gradients reach the backbone)
and one prediction."""
import pytest
import torch
from mmengine.runner import Runner

from mm_helpers import assert_gradients_reach, build_in_scope, demo_cfg
from zoo import ZOO
from mmvisbackbones.datasets import make_ade_demo, make_coco_demo


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_data')
    make_coco_demo(str(root / 'coco'), num_train=4, num_val=2)
    make_ade_demo(str(root / 'ade'), num_train=4, num_val=2)
    return str(root)


@pytest.mark.parametrize('backbone', sorted(ZOO))
@pytest.mark.parametrize('kind', ['maskrcnn', 'upernet', 'dino'])
def test_one_training_iteration(kind, backbone, data_root):
    cfg = demo_cfg(kind, data_root, backbone=backbone)
    model = build_in_scope(cfg, kind)
    model.init_weights()
    assert type(model.backbone).__name__ == backbone
    loader = Runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    assert_gradients_reach(model.backbone)

    model.eval()
    val_batch = next(iter(Runner.build_dataloader(cfg.val_dataloader)))
    with torch.no_grad():
        preds = model.val_step(val_batch)
    assert len(preds) == len(val_batch['inputs'])
