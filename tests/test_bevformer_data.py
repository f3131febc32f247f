"""The BEVFormer data side: the generated nuScenes-format demo data, the
temporal info files, ``BEVFormerNuScenesDataset`` / ``MultiViewImageScale``
and the round trip through mmdet3d's ``NuScenesMetric`` (the devkit's
detection evaluation).

One tiny dataset (10 scenes x 3 frames, 160 x 90 images) is generated per
module."""
import copy
import json
import math
import os
import pickle

import numpy as np
import pytest

pytest.importorskip('mmdet3d')
pytest.importorskip('nuscenes')

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmvisbackbones.datasets import (  # noqa: E402
    create_nuscenes_infos, make_nuscenes_demo)
from mmvisbackbones.datasets.nuscenes_demo import (  # noqa: E402
    CAMERAS, CLASS_COLORS, DETECTION_CLASSES, FACE_SHADES, MINI_TRAIN_SCENES,
    MINI_VAL_SCENES)

IMG_SIZE = (160, 90)   # (W, H)
CLASS_NAMES = list(DETECTION_CLASSES)
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
META_KEYS = ('sample_idx', 'token', 'scene_token', 'frame_idx', 'can_bus',
             'lidar2img', 'cam2img', 'lidar2cam', 'ego2global', 'img_shape',
             'ori_shape', 'pad_shape', 'scale_factor', 'num_views',
             'box_type_3d', 'box_mode_3d', 'cam_names')
TEMPORAL_INFO_KEYS = ('scene_token', 'prev', 'next', 'frame_idx', 'can_bus')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('nuscenes'))
    summary = make_nuscenes_demo(root, frames_per_scene=3, img_size=IMG_SIZE,
                                 seed=0)
    infos = create_nuscenes_infos(root, version='v1.0-mini')
    return dict(root=root, summary=summary, infos=infos)


def _load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _register():
    import mmvisbackbones.detectors.bevformer  # noqa: F401
    from mmdet3d.utils import register_all_modules
    register_all_modules(init_default_scope=True)


def _pipeline(train, scale=0.5):
    pipe = [dict(type='LoadMultiViewImageFromFiles', to_float32=True,
                 num_views=6)]
    if train:
        pipe += [
            dict(type='LoadAnnotations3D', with_bbox_3d=True,
                 with_label_3d=True, with_attr_label=False),
            dict(type='ObjectRangeFilter', point_cloud_range=PC_RANGE),
            dict(type='ObjectNameFilter', classes=CLASS_NAMES)]
    pipe += [dict(type='MultiViewImageScale', scale=scale),
             dict(type='Pack3DDetInputs',
                  keys=['img', 'gt_bboxes_3d', 'gt_labels_3d'] if train
                  else ['img'], meta_keys=META_KEYS)]
    return pipe


def _dataset_cfg(root, split='train', test_mode=False, ann_file=None,
                 **kwargs):
    cfg = dict(
        type='BEVFormerNuScenesDataset', data_root=root,
        ann_file=ann_file or f'nuscenes_infos_temporal_{split}.pkl',
        data_prefix=dict(pts='samples/LIDAR_TOP',
                         **{c: f'samples/{c}' for c in CAMERAS}),
        modality=dict(use_camera=True, use_lidar=False),
        metainfo=dict(classes=CLASS_NAMES, version='v1.0-mini'),
        box_type_3d='LiDAR', queue_length=3, test_mode=test_mode,
        pipeline=_pipeline(not test_mode))
    cfg.update(kwargs)
    return cfg


def _build(cfg):
    _register()
    from mmdet3d.registry import DATASETS
    return DATASETS.build(cfg)


# --------------------------------------------------------------------------
# generated tables
# --------------------------------------------------------------------------
def test_devkit_loads_tables_and_splits(data):
    from nuscenes import NuScenes
    from nuscenes.eval.detection.utils import (
        category_to_detection_name, detection_name_to_rel_attributes)
    from nuscenes.utils.splits import create_splits_scenes
    nusc = NuScenes(version='v1.0-mini', dataroot=data['root'], verbose=False)
    names = {s['name'] for s in nusc.scene}
    splits = create_splits_scenes()
    assert set(splits['mini_train']) == set(MINI_TRAIN_SCENES)
    assert set(splits['mini_val']) == set(MINI_VAL_SCENES)
    assert names == set(MINI_TRAIN_SCENES) | set(MINI_VAL_SCENES)
    assert len(nusc.sample) == 30
    for scene in nusc.scene:
        assert scene['nbr_samples'] == 3
        tokens, tok = [], scene['first_sample_token']
        while tok:
            tokens.append(tok)
            tok = nusc.get('sample', tok)['next']
        assert len(tokens) == 3 and tokens[-1] == scene['last_sample_token']
    for sample in nusc.sample:
        assert set(sample['data']) == set(CAMERAS) | {'LIDAR_TOP'}
        for cam in CAMERAS:
            sd = nusc.get('sample_data', sample['data'][cam])
            assert (sd['width'], sd['height']) == IMG_SIZE
            with Image.open(nusc.get_sample_data_path(sd['token'])) as im:
                assert im.size == IMG_SIZE
        assert 6 <= len(sample['anns']) <= 14
    seen = set()
    for ann in nusc.sample_annotation:
        assert ann['num_lidar_pts'] > 0 and ann['num_radar_pts'] > 0
        det = category_to_detection_name(ann['category_name'])
        attrs = [nusc.get('attribute', t)['name']
                 for t in ann['attribute_tokens']]
        if det is None:
            continue
        seen.add(det)
        allowed = detection_name_to_rel_attributes(det)
        assert len(attrs) == (1 if allowed else 0)
        assert all(a in allowed for a in attrs)
    assert seen == set(DETECTION_CLASSES)


def test_lidar_points_and_stamp(data):
    from nuscenes import NuScenes
    from nuscenes.utils.geometry_utils import points_in_box
    root = data['root']
    nusc = NuScenes(version='v1.0-mini', dataroot=root, verbose=False)
    sample = nusc.sample[4]
    path, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    assert 200 < len(pts) < 3000
    for box in boxes:
        ann = nusc.get('sample_annotation', box.token)
        assert points_in_box(box, pts[:, :3].T).sum() == ann['num_lidar_pts']
    # a second call with the same parameters reuses the data
    again = make_nuscenes_demo(root, frames_per_scene=3, img_size=IMG_SIZE,
                               seed=0)
    assert again['generated'] is False
    assert again['num_annotations'] == data['summary']['num_annotations']
    assert all(n > 0 for n in again['val_class_counts'].values())


def _tree_digest(root):
    import hashlib
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            if name.endswith('.pkl'):
                continue
            path = os.path.join(d, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.md5(
                    f.read()).hexdigest()
    return out


def test_generation_is_deterministic(data, tmp_path):
    make_nuscenes_demo(str(tmp_path), frames_per_scene=3, img_size=IMG_SIZE,
                       seed=0)
    assert _tree_digest(str(tmp_path)) == _tree_digest(data['root'])


# --------------------------------------------------------------------------
# geometry and rendering
# --------------------------------------------------------------------------
def _palette():
    """(colour (3,), class index) for every class at every face shade."""
    cols, labels = [], []
    for i, name in enumerate(DETECTION_CLASSES):
        for shade in FACE_SHADES.values():
            cols.append(np.asarray(CLASS_COLORS[name]) * shade)
            labels.append(i)
    return np.array(cols), np.array(labels)


def test_projection_and_rendered_colours(data):
    root = data['root']
    infos = _load(data['infos']['val'])['data_list'] \
        + _load(data['infos']['train'])['data_list']
    cols, labels = _palette()
    w, h = IMG_SIZE
    checked = 0
    for info in infos:
        insts = info['instances']
        centers = np.array([b['bbox_3d'][:3] for b in insts])
        for cam in CAMERAS:
            ci = info['images'][cam]
            k = np.asarray(ci['cam2img'])
            l2c = np.asarray(ci['lidar2cam'])
            pad = np.eye(4)
            pad[:3, :3] = k
            lidar2img = pad @ l2c
            # pinhole: K @ (lidar2cam @ p) == lidar2img @ p
            hom = np.concatenate([centers, np.ones((len(centers), 1))], 1)
            cam_pts = hom @ l2c.T
            uvw = hom @ lidar2img.T
            np.testing.assert_allclose(uvw[:, :3], cam_pts[:, :3] @ k.T,
                                       rtol=1e-9, atol=1e-9)
            # nearest static object, clearly nearer than all others and
            # projecting well inside the image: its class colour is there
            dist = np.linalg.norm(cam_pts[:, :3], axis=1)
            j = int(np.argmin(dist))
            others = np.delete(dist, j)
            vel = np.asarray(insts[j]['velocity'])
            if (cam_pts[j, 2] < 3.0 or insts[j]['bbox_label_3d'] < 0
                    or not np.all(np.abs(vel) < 1e-6)
                    or (len(others) and others.min() < dist[j] + 2.0)):
                continue
            u, v = uvw[j, :2] / uvw[j, 2]
            if not (4 <= u < w - 4 and 4 <= v < h - 4):
                continue
            with Image.open(os.path.join(root, 'samples', cam,
                                         ci['img_path'])) as im:
                rgb = np.asarray(im.convert('RGB'), dtype=np.float64)
            pix = rgb[int(round(v)), int(round(u))]
            nearest = labels[np.argmin(np.linalg.norm(cols - pix, axis=1))]
            assert nearest == insts[j]['bbox_label_3d'], (cam, pix)
            checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------
# info files
# --------------------------------------------------------------------------
def test_infos_layout_and_temporal_keys(data):
    from pyquaternion import Quaternion
    for split, n in (('train', 24), ('val', 6)):
        content = _load(data['infos'][split])
        meta = content['metainfo']
        assert meta['version'] == 'v1.0-mini'
        assert meta['categories'] == {c: i for i, c in
                                      enumerate(DETECTION_CLASSES)}
        infos = content['data_list']
        assert len(infos) == n
        scenes = []
        for idx, info in enumerate(infos):
            assert info['sample_idx'] == idx
            for key in ('token', 'timestamp', 'ego2global', 'lidar_points',
                        'images', 'instances') + TEMPORAL_INFO_KEYS:
                assert key in info, key
            assert list(info['images']) == list(CAMERAS)
            for ci in info['images'].values():
                for key in ('img_path', 'cam2img', 'cam2ego', 'lidar2cam',
                            'sample_data_token', 'timestamp'):
                    assert key in ci
            assert info['lidar_points']['num_pts_feats'] == 5
            for inst in info['instances']:
                assert len(inst['bbox_3d']) == 7 and len(inst['velocity']) == 2
                assert inst['bbox_3d_isvalid']
            e2g = np.asarray(info['ego2global'])
            can = np.asarray(info['can_bus'])
            assert can.shape == (18, )
            np.testing.assert_allclose(can[:3], e2g[:3, 3])
            q = Quaternion(matrix=e2g[:3, :3])
            assert abs(abs(np.dot(q.elements, can[3:7])) - 1) < 1e-9
            yaw = math.degrees(math.atan2(e2g[1, 0], e2g[0, 0])) % 360.0
            assert 0 <= can[17] < 360 and abs(can[17] - yaw) < 1e-6
            assert abs(can[16] - math.radians(can[17])) < 1e-9
            if info['frame_idx'] == 0:
                scenes.append(info['scene_token'])
                assert info['prev'] == '' and np.all(can[7:16] == 0)
            else:
                prev = infos[idx - 1]
                assert prev['scene_token'] == info['scene_token']
                assert info['prev'] == prev['token']
                assert prev['next'] == info['token']
                assert info['frame_idx'] == prev['frame_idx'] + 1
                dt = info['timestamp'] - prev['timestamp']
                d = e2g[:3, 3] - np.asarray(prev['ego2global'])[:3, 3]
                np.testing.assert_allclose(can[13:16],
                                           e2g[:3, :3].T @ d / dt, atol=1e-9)
                assert 2.5 < np.linalg.norm(can[13:16]) < 8.5   # ego speed
            if info['next'] == '':
                assert idx + 1 == len(infos) or \
                    infos[idx + 1]['frame_idx'] == 0
        assert len(set(scenes)) == len(scenes) == n // 3


def test_info_boxes_match_global_annotations(data):
    """bbox_3d (lidar frame, gravity centre, l w h, yaw) mapped back with
    ego2global @ lidar2ego lands on the table's global annotation."""
    from pyquaternion import Quaternion
    root = data['root']
    anns = {}
    with open(os.path.join(root, 'v1.0-mini', 'sample_annotation.json')) as f:
        for a in json.load(f):
            anns.setdefault(a['sample_token'], []).append(a)
    info = _load(data['infos']['val'])['data_list'][2]
    l2g = np.asarray(info['ego2global']) \
        @ np.asarray(info['lidar_points']['lidar2ego'])
    glob = sorted(anns[info['token']], key=lambda a: a['translation'])
    mine = []
    for inst in info['instances']:
        x, y, z, l, w, h, yaw = inst['bbox_3d']
        c = l2g @ np.array([x, y, z, 1.0])
        g_yaw = yaw + math.atan2(l2g[1, 0], l2g[0, 0])
        mine.append((list(c[:3]), [w, l, h], g_yaw))
    mine.sort(key=lambda m: m[0])
    assert len(mine) == len(glob)
    for (c, wlh, yaw), a in zip(mine, glob):
        np.testing.assert_allclose(c, a['translation'], atol=1e-6)
        np.testing.assert_allclose(wlh, a['size'], atol=1e-9)
        a_yaw = Quaternion(a['rotation']).yaw_pitch_roll[0]
        assert abs((yaw - a_yaw + math.pi) % (2 * math.pi) - math.pi) < 1e-9


def test_tool_says_where_data_must_be(tmp_path):
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(repo, 'tools',
                                                     'create_nuscenes_infos.py'),
                        '--root', str(tmp_path / 'nope'),
                        '--version', 'v1.0-mini'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'nope' in r.stderr and 'v1.0-mini' in r.stderr
    assert 'Traceback' not in r.stderr


# --------------------------------------------------------------------------
# dataset and transforms
# --------------------------------------------------------------------------
def test_dataset_train_queue(data):
    ds = _build(_dataset_cfg(data['root'], 'train'))
    assert ds.metainfo['version'] == 'v1.0-mini'
    info = ds.get_data_info(5)
    assert info['lidar2img'].shape == (6, 4, 4)
    assert info['lidar2img'].dtype == np.float64
    assert info['cam_names'] == list(CAMERAS)
    assert info['can_bus'].shape == (18, )
    for idx in (0, 2, 4, 7, 23):
        torch.manual_seed(idx)
        out = ds[idx]
        img = out['inputs']['img']
        assert img.shape == (3, 6, 3, 45, 80) and img.dtype == torch.float32
        sample = out['data_samples']
        metas = sample.metainfo['queue_metas'] + [sample.metainfo]
        assert len(metas) == 3
        assert len(sample.gt_instances_3d) > 0
        assert sample.gt_instances_3d.bboxes_3d.tensor.shape[1] == 9
        prev_scene, prev_abs = None, None
        for m in metas:
            assert m['lidar2img'].shape == (6, 4, 4)
            assert tuple(m['img_shape']) == (45, 80)
            frame = [i for i in range(len(ds))
                     if ds.get_data_info(i)['token'] == m['token']][0]
            absolute = ds.get_data_info(frame)['can_bus']
            can = m['can_bus']
            assert isinstance(can, np.ndarray) and can.shape == (18, )
            if m['scene_token'] != prev_scene:
                assert m['prev_bev_exists'] is False
                assert np.all(can[:3] == 0) and can[-1] == 0
            else:
                assert m['prev_bev_exists'] is True
                np.testing.assert_allclose(can[:3], absolute[:3]
                                           - prev_abs[:3])
                assert abs(can[-1] - (absolute[-1] - prev_abs[-1])) < 1e-9
            np.testing.assert_allclose(can[3:-1], absolute[3:-1])
            prev_scene, prev_abs = m['scene_token'], absolute
        assert metas[-1]['token'] == ds.get_data_info(idx)['token']


def test_dataset_test_mode(data):
    ds = _build(_dataset_cfg(data['root'], 'val', test_mode=True))
    assert ds.metainfo['version'] == 'v1.0-mini'
    out = ds[1]
    assert out['inputs']['img'].shape == (6, 3, 45, 80)
    m = out['data_samples'].metainfo
    info = ds.get_data_info(1)
    np.testing.assert_array_equal(m['can_bus'], info['can_bus'])
    assert m['scene_token'] == info['scene_token']
    assert 'queue_metas' not in m
    # lidar2img scaled by the 0.5 resize
    np.testing.assert_allclose(
        m['lidar2img'], np.diag([0.5, 0.5, 1, 1]) @ info['lidar2img'])


def test_dataset_errors_name_the_problem(data, tmp_path):
    content = _load(data['infos']['val'])
    bad_cam = copy.deepcopy(content)
    bad_cam['data_list'][0]['images'].pop('CAM_BACK')
    bad_bus = copy.deepcopy(content)
    bad_bus['data_list'][0].pop('can_bus')
    bad_k = copy.deepcopy(content)
    bad_k['data_list'][0]['images']['CAM_FRONT'].pop('cam2img')
    token = content['data_list'][0]['token']
    for name, obj, words in (('cam', bad_cam, ['5 cameras', 'num_cams=6']),
                             ('bus', bad_bus, ['can_bus',
                                               'create_nuscenes_infos']),
                             ('k', bad_k, ['CAM_FRONT', 'cam2img'])):
        path = tmp_path / f'{name}.pkl'
        with open(path, 'wb') as f:
            pickle.dump(obj, f)
        with pytest.raises(ValueError) as e:
            _build(_dataset_cfg(data['root'], test_mode=True,
                                ann_file=str(path)))
        for word in words + [token]:
            assert word in str(e.value), (word, str(e.value))


def test_multiview_image_scale():
    _register()
    from mmdet3d.registry import TRANSFORMS
    t = TRANSFORMS.build(dict(type='MultiViewImageScale', scale=0.5))
    k = np.array([[100.0, 0, 81.0], [0, 100.0, 45.0], [0, 0, 1]])
    pad = np.eye(4)
    pad[:3, :3] = k
    l2c = np.eye(4)
    l2c[:3, 3] = [0.3, -0.2, 0.1]
    res = dict(img=[np.zeros((91, 161, 3), np.float32) for _ in range(2)],
               cam2img=[k.tolist()] * 2, lidar2cam=[l2c] * 2,
               lidar2img=np.stack([pad @ l2c] * 2), scale_factor=1.0)
    out = t(res)
    assert out['img'][0].shape == (46, 80, 3)          # round(45.5)=46
    assert out['img_shape'] == (46, 80)
    sx, sy = 80 / 161, 46 / 91
    assert out['scale_factor'] == pytest.approx((sx, sy))
    p = np.array([1.0, 2.0, 10.0, 1.0])
    before = (pad @ l2c @ p)
    after = out['lidar2img'][1] @ p
    np.testing.assert_allclose(after[:2] / after[2],
                               before[:2] / before[2] * [sx, sy])
    np.testing.assert_allclose(out['cam2img'][0][:2],
                               k[:2] * np.array([[sx], [sy]]))
    # more images than matrices (MultiViewWrapper(collected_keys=['img'])
    # appends the views again) is an error, not an IndexError
    with pytest.raises(ValueError, match='collected_keys'):
        t(dict(img=[np.zeros((90, 160, 3), np.float32)] * 4,
               lidar2img=np.stack([pad @ l2c] * 2)))
    # without lidar2img it is derived from cam2img @ lidar2cam
    res2 = dict(img=[np.zeros((90, 160, 3), np.float32)],
                cam2img=[k], lidar2cam=[l2c])
    np.testing.assert_allclose(t(res2)['lidar2img'][0],
                               np.diag([.5, .5, 1, 1]) @ pad @ l2c)


# --------------------------------------------------------------------------
# the metric round trip
# --------------------------------------------------------------------------
def test_gt_as_predictions_scores_perfectly(data):
    from mmdet3d.evaluation import NuScenesMetric
    root = data['root']
    ds = _build(_dataset_cfg(root, 'val', test_mode=True))
    metric = NuScenesMetric(data_root=root, ann_file=data['infos']['val'],
                            metric='bbox')
    metric.dataset_meta = ds.metainfo
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        ann = info['eval_ann_info']
        keep = torch.from_numpy(ann['gt_labels_3d'] >= 0)
        boxes = ann['gt_bboxes_3d'][keep]
        assert boxes.tensor.shape[1] == 9
        pred = dict(bboxes_3d=boxes, scores_3d=torch.ones(len(boxes)),
                    labels_3d=torch.from_numpy(ann['gt_labels_3d'])[keep])
        metric.process({}, [dict(pred_instances_3d=pred, pred_instances={},
                                 sample_idx=info['sample_idx'])])
    res = metric.compute_metrics(metric.results)
    pre = 'pred_instances_3d_NuScenes'
    assert res[f'{pre}/mAP'] == pytest.approx(1.0, abs=1e-6)
    for name in DETECTION_CLASSES:
        assert res[f'{pre}/{name}_AP_dist_0.5'] == pytest.approx(1.0)
        for err in ('trans_err', 'scale_err', 'orient_err'):
            v = res[f'{pre}/{name}_{err}']
            # the devkit does not score cone orientation (nan)
            assert (name == 'traffic_cone' and err == 'orient_err'
                    and math.isnan(v)) or v < 1e-3, (name, err, v)
    for err in ('mATE', 'mASE', 'mAOE'):
        assert res[f'{pre}/{err}'] < 1e-3
