"""The BEVFormer detector: the temporal queue (history BEV without
gradients, restarted at scene changes), batch size 2, the test-time BEV
carried from frame to frame, and the errors for bad input."""
import copy

import pytest
import torch

pytest.importorskip('mmdet3d')

from bev_helpers import build, make_batch, tiny_bevformer_cfg  # noqa: E402


def loss_of(model, data):
    d = model.data_preprocessor(copy.deepcopy(data), True)
    losses = model(**d, mode='loss')
    return sum(v for v in losses.values()), losses


def test_queue_batch2_trains_and_history_has_no_grad(monkeypatch):
    model = build(tiny_bevformer_cfg())
    model.train()
    data = make_batch(batch=2, queue=3)
    seen = {}
    orig = model.obtain_history_bev

    def spy(*a, **k):
        seen['training_inside'] = model.training
        out = orig(*a, **k)
        seen['prev'] = out
        return out
    monkeypatch.setattr(model, 'obtain_history_bev', spy)
    loss, losses = loss_of(model, data)
    assert torch.isfinite(loss), losses
    assert 'd0.loss_cls' in losses and 'loss_bbox' in losses
    assert seen['prev'].shape == (2, 64, 32) and not seen['prev'].requires_grad
    assert model.training                    # back in train mode after the history
    loss.backward()
    grads = [p.grad for p in model.img_backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_history_is_used_only_when_the_previous_frame_exists():
    cfg = tiny_bevformer_cfg(dropout=0.0, grid_mask=False)
    torch.manual_seed(0)
    model = build(cfg)
    model.train()
    with_prev = make_batch(batch=2, queue=3, prev_exists=True)
    # same current frame, other history images
    other_hist = copy.deepcopy(with_prev)
    for im in other_hist['inputs']['img']:
        im[:-1] = torch.rand_like(im[:-1]) * 255
    no_prev = copy.deepcopy(with_prev)
    for s in no_prev['data_samples']:
        s.set_metainfo(dict(prev_bev_exists=False))
    no_prev_other = copy.deepcopy(other_hist)
    for s in no_prev_other['data_samples']:
        s.set_metainfo(dict(prev_bev_exists=False))
    single = copy.deepcopy(no_prev)
    single['inputs']['img'] = [im[-1] for im in single['inputs']['img']]
    with torch.no_grad():
        a = loss_of(model, with_prev)[0]
        b = loss_of(model, other_hist)[0]
        c = loss_of(model, no_prev)[0]
        d = loss_of(model, no_prev_other)[0]
        e = loss_of(model, single)[0]
    assert not torch.allclose(a, b)           # the history BEV matters ...
    torch.testing.assert_close(c, d)           # ... unless the scene just started
    torch.testing.assert_close(c, e)           # = a queue of one frame


def test_test_time_bev_is_carried_within_a_scene():
    model = build(tiny_bevformer_cfg(dropout=0.0))
    model.eval()
    data = make_batch(batch=1, queue=1)
    first = copy.deepcopy(data)
    first['data_samples'][0].set_metainfo(dict(token='f0', prev='', scene_token='s'))
    second = copy.deepcopy(data)
    second['data_samples'][0].set_metainfo(dict(token='f1', prev='f0', scene_token='s'))
    with torch.no_grad():
        fresh = model.test_step(copy.deepcopy(second))[0].pred_instances_3d.scores_3d
        model.test_step(first)
        carried = model.test_step(copy.deepcopy(second))[0].pred_instances_3d.scores_3d
        other = copy.deepcopy(second)
        other['data_samples'][0].set_metainfo(dict(token='g1', prev='f0', scene_token='t'))
        new_scene = model.test_step(other)[0].pred_instances_3d.scores_3d
    assert not torch.allclose(fresh, carried)
    torch.testing.assert_close(fresh, new_scene)


def test_predictions_are_lidar_boxes_in_range():
    model = build(tiny_bevformer_cfg())
    model.eval()
    with torch.no_grad():
        out = model.test_step(make_batch(batch=2, queue=1))
    assert len(out) == 2
    p = out[0].pred_instances_3d
    assert p.bboxes_3d.tensor.shape == (20, 9) and p.scores_3d.shape == (20, )
    assert (p.labels_3d >= 0).all() and (p.labels_3d < 10).all()
    assert 'pred_instances' in out[0]          # what NuScenesMetric reads


# ----------------------------------------------------------------- bad input
def test_wrong_number_of_cameras_is_named():
    model = build(tiny_bevformer_cfg())
    data = make_batch(batch=1, queue=1)
    data['inputs']['img'] = [im[:5] for im in data['inputs']['img']]
    d = model.data_preprocessor(data, False)
    with pytest.raises(ValueError, match='5 camera images per frame.*num_cams=6'):
        model(**d, mode='predict')


@pytest.mark.parametrize('key', ['lidar2img', 'can_bus'])
def test_missing_geometry_is_named(key):
    model = build(tiny_bevformer_cfg())
    model.train()
    from mmdet3d.structures import Det3DDataSample
    data = make_batch(batch=1, queue=1)
    s = data['data_samples'][0]
    fresh = Det3DDataSample(metainfo={k: v for k, v in s.metainfo.items() if k != key})
    fresh.gt_instances_3d = s.gt_instances_3d
    data['data_samples'] = [fresh]
    d = model.data_preprocessor(data, True)
    with pytest.raises(KeyError, match=key):
        model(**d, mode='loss')


def test_lidar2img_for_the_wrong_camera_count_is_named():
    model = build(tiny_bevformer_cfg())
    data = make_batch(batch=1, queue=1)
    data['data_samples'][0].set_metainfo(dict(lidar2img=data['data_samples'][0].lidar2img[:4]))
    d = model.data_preprocessor(data, False)
    with pytest.raises(ValueError, match=r'lidar2img of shape \(4, 4, 4\)'):
        model(**d, mode='predict')


def test_images_smaller_than_the_backbone_minimum_are_named():
    model = build(tiny_bevformer_cfg())
    data = make_batch(batch=1, queue=1, h=16, w=24)
    d = model.data_preprocessor(data, False)
    d['inputs']['img'] = d['inputs']['img'][..., :16, :24]
    with pytest.raises(ValueError, match='smaller than the backbone VMamba'):
        model(**d, mode='predict')


def test_neck_channels_not_matching_the_backbone_are_named():
    cfg = tiny_bevformer_cfg()
    cfg['neck']['in_channels'] = [999]
    with pytest.raises(ValueError, match=r"neck's in_channels \[999\].*out_channels"):
        build(cfg)


@pytest.mark.parametrize('size,world', [(10, 1), (10, 3), (81, 8), (7, 4), (5, 8)])
def test_contiguous_sampler_keeps_scenes_on_one_rank(size, world, monkeypatch):
    """Each rank gets one contiguous block, and mmengine's interleaving
    collection (zip over ranks, then drop the padding at the end) gives every
    sample exactly once."""
    import mmvisbackbones.detectors.bevformer.sampler as smp
    parts = []
    for rank in range(world):
        monkeypatch.setattr(smp, 'get_dist_info', lambda r=rank: (r, world))
        parts.append(list(smp.ContiguousSampler(list(range(size)))))
    assert len({len(p) for p in parts}) == 1
    for p in parts:
        real = sorted(set(p))
        assert real == list(range(real[0], real[-1] + 1))      # contiguous
    collected = [i for group in zip(*parts) for i in group][:size]   # mmengine's order
    assert sorted(collected) == list(range(size))
