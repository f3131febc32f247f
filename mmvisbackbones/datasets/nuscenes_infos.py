"""nuScenes info files for BEVFormer in mmdet3d 1.x's v2 layout.

:func:`create_nuscenes_infos` reads the nuScenes tables with the official
devkit (imported lazily) and writes ``<prefix>_train.pkl`` /
``<prefix>_val.pkl`` (``<prefix>_test.pkl`` for ``v1.0-test``), exactly in
the layout ``mmdet3d.datasets.NuScenesDataset`` and ``NuScenesMetric`` read
(what mmdet3d's ``tools/create_data.py nuscenes`` + ``update_infos_to_v2``
produce), plus the temporal keys BEVFormer needs.

File layout::

    dict(metainfo=dict(categories={class name: label}, dataset='nuscenes',
                       version=version, info_version='1.1'),
         data_list=[info, ...])

Each ``info`` (one key frame; ``data_list`` sorted by scene, then time, so
the frames of a scene are consecutive):

* ``sample_idx`` (int): index of the info in ``data_list`` (NuScenesMetric
  uses it to find the sample token), ``token`` (sample token),
  ``timestamp`` (float, seconds), ``ego2global`` (4x4 list, the ego pose at
  the LIDAR_TOP time),
* ``lidar_points``: ``num_pts_feats`` = 5, ``lidar_path`` (file name, joined
  with ``data_prefix['pts']`` by the dataset), ``lidar2ego`` (4x4),
* ``images``: for ``CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK,
  CAM_BACK_LEFT, CAM_BACK_RIGHT`` in this order: ``img_path`` (file name),
  ``cam2img`` (3x3), ``cam2ego`` (4x4), ``lidar2cam`` (4x4: lidar at the
  LIDAR_TOP time -> global (with that ego pose) -> camera (with the ego pose
  at the camera's time), as mmdet3d's converter does), ``sample_data_token``,
  ``timestamp`` (s),
* ``instances`` (not for v1.0-test): per annotation ``bbox_3d`` = [x, y, z,
  l, w, h, yaw] in the LIDAR_TOP frame with z the box's gravity centre
  (l, w, h = nuScenes wlh[[1, 0, 2]]; yaw = the lidar-frame box's
  ``orientation.yaw_pitch_roll[0]``), ``bbox_label_3d`` (class index, -1
  for categories outside the 10 detection classes), ``bbox_3d_isvalid``
  (num_lidar_pts + num_radar_pts > 0), ``velocity`` [vx, vy] in the lidar
  frame (NaN where the devkit cannot estimate it; NuScenesDataset zeroes
  NaNs), ``num_lidar_pts``, ``num_radar_pts``, ``attr_label`` (index into
  :data:`ATTRIBUTES`, 8 = 'None'),
* BEVFormer's temporal keys: ``scene_token``, ``prev`` / ``next`` (sample
  tokens within the scene, '' at the ends), ``frame_idx`` (0-based index in
  the scene), ``can_bus`` (18 floats).

``can_bus`` follows upstream BEVFormer, which overwrites the CAN-bus pose
with the ego pose: [0:3] ego2global translation, [3:7] ego2global rotation
quaternion (w, x, y, z), [7:10] acceleration, [10:13] rotation rate,
[13:16] velocity, [16] patch angle in radians, [17] patch angle in degrees
(patch angle = yaw of the ego rotation in degrees, +360 when negative).
Velocity, rotation rate and acceleration are finite differences of the
ego poses of consecutive key frames of the scene, expressed in the current
ego frame (velocity and rotation rate are zero in a scene's first frame,
acceleration in its first two).  Unlike the real CAN bus the acceleration
holds no gravity component.
"""
import os
import os.path as osp
import pickle

import numpy as np

__all__ = ['CAMERAS', 'DETECTION_CLASSES', 'ATTRIBUTES', 'NAME_MAPPING',
           'create_nuscenes_infos', 'ego_can_bus']

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
DETECTION_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
                     'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
                     'barrier')
#: mmdet3d's attribute order (``attr_label`` indices).
ATTRIBUTES = ('cycle.with_rider', 'cycle.without_rider', 'pedestrian.moving',
              'pedestrian.standing', 'pedestrian.sitting_lying_down',
              'vehicle.moving', 'vehicle.parked', 'vehicle.stopped', 'None')
#: nuScenes category -> detection class (mmdet3d's / the devkit's mapping).
NAME_MAPPING = {
    'movable_object.barrier': 'barrier',
    'vehicle.bicycle': 'bicycle',
    'vehicle.bus.bendy': 'bus',
    'vehicle.bus.rigid': 'bus',
    'vehicle.car': 'car',
    'vehicle.construction': 'construction_vehicle',
    'vehicle.motorcycle': 'motorcycle',
    'human.pedestrian.adult': 'pedestrian',
    'human.pedestrian.child': 'pedestrian',
    'human.pedestrian.construction_worker': 'pedestrian',
    'human.pedestrian.police_officer': 'pedestrian',
    'movable_object.trafficcone': 'traffic_cone',
    'vehicle.trailer': 'trailer',
    'vehicle.truck': 'truck',
}
_SPLITS = {
    'v1.0-trainval': (('train', 'train'), ('val', 'val')),
    'v1.0-mini': (('train', 'mini_train'), ('val', 'mini_val')),
    'v1.0-test': (('test', 'test'), ),
}


def _quat_matrix(q):
    """3x3 rotation of a (w, x, y, z) quaternion via pyquaternion, as the
    devkit and mmdet3d compute it."""
    from pyquaternion import Quaternion
    return Quaternion(q).rotation_matrix


def _rt(rotation, translation):
    m = np.eye(4)
    m[:3, :3] = _quat_matrix(rotation)
    m[:3, 3] = translation
    return m


def _yaw_of(rot):
    """Yaw of a rotation matrix (devkit's ``quaternion_yaw``)."""
    v = rot @ np.array([1.0, 0.0, 0.0])
    return float(np.arctan2(v[1], v[0]))


def _rotvec(rot):
    """Axis-angle vector of a rotation matrix."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    w = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0],
                  rot[1, 0] - rot[0, 1]])
    if angle < 1e-8:
        return 0.5 * w
    return angle / (2.0 * np.sin(angle)) * w


def ego_can_bus(poses):
    """BEVFormer ``can_bus`` vectors of one scene from its ego poses.

    Args:
        poses (list[tuple]): per key frame (in time order)
            ``(timestamp_s, rotation (w, x, y, z), translation (3,))``.

    Returns:
        list[np.ndarray]: one float64 (18,) vector per frame (layout in the
        module docstring).
    """
    out = []
    prev_vel_g = None
    for k, (t, q, trans) in enumerate(poses):
        rot = _quat_matrix(q)
        trans = np.asarray(trans, dtype=np.float64)
        can = np.zeros(18, dtype=np.float64)
        can[:3] = trans
        can[3:7] = q
        vel_g = None
        if k > 0:
            t0, q0, trans0 = poses[k - 1]
            dt = float(t - t0)
            if dt > 0:
                vel_g = (trans - np.asarray(trans0, dtype=np.float64)) / dt
                rot0 = _quat_matrix(q0)
                can[10:13] = _rotvec(rot0.T @ rot) / dt     # ego-frame rate
                can[13:16] = rot.T @ vel_g                  # ego-frame vel
                if prev_vel_g is not None:
                    can[7:10] = rot.T @ (vel_g - prev_vel_g) / dt
        prev_vel_g = vel_g
        angle = _yaw_of(rot) / np.pi * 180.0
        if angle < 0:
            angle += 360.0
        can[16] = angle / 180.0 * np.pi
        can[17] = angle
        out.append(can)
    return out


def _sample_info(nusc, sample, with_ann, root):
    lidar_token = sample['data']['LIDAR_TOP']
    sd = nusc.get('sample_data', lidar_token)
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    lidar2ego = _rt(cs['rotation'], cs['translation'])
    ego2global = _rt(pose['rotation'], pose['translation'])
    lidar2global = ego2global @ lidar2ego
    info = dict(
        token=sample['token'],
        timestamp=sample['timestamp'] / 1e6,
        ego2global=ego2global.tolist(),
        lidar_points=dict(num_pts_feats=5,
                          lidar_path=osp.basename(sd['filename']),
                          lidar2ego=lidar2ego.tolist()),
        images={},
        scene_token=sample['scene_token'],
        prev=sample['prev'],
        next=sample['next'])
    for cam in CAMERAS:
        if cam not in sample['data']:
            raise ValueError(f'sample {sample["token"]} has no {cam} image')
        cam_sd = nusc.get('sample_data', sample['data'][cam])
        cam_cs = nusc.get('calibrated_sensor',
                          cam_sd['calibrated_sensor_token'])
        cam_pose = nusc.get('ego_pose', cam_sd['ego_pose_token'])
        cam2ego = _rt(cam_cs['rotation'], cam_cs['translation'])
        cam2global = _rt(cam_pose['rotation'], cam_pose['translation']) \
            @ cam2ego
        lidar2cam = np.linalg.inv(cam2global) @ lidar2global
        info['images'][cam] = dict(
            img_path=osp.basename(cam_sd['filename']),
            cam2img=np.asarray(cam_cs['camera_intrinsic'],
                               dtype=np.float64).tolist(),
            cam2ego=cam2ego.tolist(),
            lidar2cam=lidar2cam.tolist(),
            sample_data_token=cam_sd['token'],
            timestamp=cam_sd['timestamp'] / 1e6)
    if not with_ann:
        return info

    # boxes in the lidar frame, as nusc.get_sample_data gives them
    _, boxes, _ = nusc.get_sample_data(lidar_token)
    r_l2g_inv = np.linalg.inv(lidar2global[:3, :3])
    instances = []
    for ann_token, box in zip(sample['anns'], boxes):
        ann = nusc.get('sample_annotation', ann_token)
        assert box.token == ann_token
        vel = nusc.box_velocity(ann_token)[:2]
        # global -> lidar frame (rotation only), NaN stays NaN
        vel = np.array([vel[0], vel[1], 0.0]) @ r_l2g_inv.T
        name = NAME_MAPPING.get(ann['category_name'])
        label = DETECTION_CLASSES.index(name) if name is not None else -1
        if len(ann['attribute_tokens']) > 0:
            attr_name = nusc.get('attribute',
                                 ann['attribute_tokens'][0])['name']
            attr_label = ATTRIBUTES.index(attr_name) \
                if attr_name in ATTRIBUTES else len(ATTRIBUTES) - 1
        else:
            attr_label = len(ATTRIBUTES) - 1
        w, l, h = box.wlh
        yaw = box.orientation.yaw_pitch_roll[0]
        instances.append(dict(
            bbox_3d=[float(v) for v in box.center] + [float(l), float(w),
                                                      float(h), float(yaw)],
            bbox_label_3d=int(label),
            bbox_3d_isvalid=bool(ann['num_lidar_pts']
                                 + ann['num_radar_pts'] > 0),
            velocity=[float(vel[0]), float(vel[1])],
            num_lidar_pts=int(ann['num_lidar_pts']),
            num_radar_pts=int(ann['num_radar_pts']),
            attr_label=int(attr_label)))
    info['instances'] = instances
    return info


def _check_root(root, version):
    table_dir = osp.join(root, version)
    if not osp.isdir(root):
        raise FileNotFoundError(
            f'nuScenes root {root!r} does not exist: the dataset must be at '
            f'{root}/ with the tables in {root}/{version}/*.json and the '
            f'images in {root}/samples/CAM_*/ (for the generated demo data '
            'run mmvisbackbones.datasets.make_nuscenes_demo(root)).')
    if not osp.isfile(osp.join(table_dir, 'sample.json')):
        raise FileNotFoundError(
            f'nuScenes tables for {version} not found: expected '
            f'{table_dir}/sample.json (and the other 12 tables) under the '
            f'root {root}/, with the images in {root}/samples/CAM_*/.')


def create_nuscenes_infos(root, version='v1.0-trainval', out_dir=None,
                          prefix='nuscenes_infos_temporal',
                          skip_missing=True):
    """Write BEVFormer's temporal nuScenes info files (mmdet3d v2 layout).

    Args:
        root (str): nuScenes root (holds ``<version>/`` and ``samples/``).
        version (str): 'v1.0-trainval', 'v1.0-mini' or 'v1.0-test'.
        out_dir (str, optional): where to write; defaults to ``root``.
        prefix (str): file name prefix.
        skip_missing (bool): skip (and report) scenes whose first sample's
            camera images are missing (partial downloads), like mmdet3d's
            ``get_available_scenes``; with False such scenes raise.

    Returns:
        dict: split name ('train' / 'val' / 'test') -> path of the written
        pkl; also ``num_<split>`` (sample count) and ``skipped_scenes``.

    Raises:
        FileNotFoundError: ``root`` or ``root/<version>/sample.json`` is
            missing (the message says what must be where).
    """
    if version not in _SPLITS:
        raise ValueError(f'unknown nuScenes version {version!r}; expected '
                         f'one of {sorted(_SPLITS)}')
    root = osp.abspath(os.fspath(root))
    _check_root(root, version)

    import mmengine
    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes
    out_dir = osp.abspath(out_dir) if out_dir else root
    os.makedirs(out_dir, exist_ok=True)

    nusc = NuScenes(version=version, dataroot=root, verbose=False)
    splits = create_splits_scenes()
    scene_by_name = {s['name']: s for s in nusc.scene}
    with_ann = version != 'v1.0-test'

    result = dict(skipped_scenes=[])
    jobs = []
    for split, split_name in _SPLITS[version]:
        scenes = []
        for name in splits[split_name]:
            if name not in scene_by_name:
                continue
            scene = scene_by_name[name]
            first = nusc.get('sample', scene['first_sample_token'])
            missing = [cam for cam in CAMERAS if cam not in first['data']
                       or not osp.isfile(nusc.get_sample_data_path(
                           first['data'][cam]))]
            if missing:
                if not skip_missing:
                    raise FileNotFoundError(
                        f'{name}: images of {missing} missing under {root}')
                result['skipped_scenes'].append(name)
                continue
            scenes.append(scene)
        first_ts = {s['token']: nusc.get(
            'sample', s['first_sample_token'])['timestamp'] for s in scenes}
        scenes.sort(key=lambda s: (first_ts[s['token']], s['name']))
        jobs.append((split, scenes))

    total = sum(s['nbr_samples'] for _, scenes in jobs for s in scenes)
    bar = mmengine.ProgressBar(total) if total else None
    for split, scenes in jobs:
        data_list = []
        for scene in scenes:
            samples = []
            token = scene['first_sample_token']
            while token:
                sample = nusc.get('sample', token)
                samples.append(sample)
                token = sample['next']
            samples.sort(key=lambda s: s['timestamp'])
            infos = [_sample_info(nusc, s, with_ann, root) for s in samples]
            poses = []
            for s in samples:
                sd = nusc.get('sample_data', s['data']['LIDAR_TOP'])
                pose = nusc.get('ego_pose', sd['ego_pose_token'])
                poses.append((sd['timestamp'] / 1e6,
                              list(pose['rotation']),
                              list(pose['translation'])))
            for frame_idx, (info, can) in enumerate(
                    zip(infos, ego_can_bus(poses))):
                info['frame_idx'] = frame_idx
                info['can_bus'] = can.tolist()
                info['sample_idx'] = len(data_list)
                data_list.append(info)
                if bar is not None:
                    bar.update()
        out = dict(metainfo=dict(
            categories={n: i for i, n in enumerate(DETECTION_CLASSES)},
            dataset='nuscenes', version=version, info_version='1.1'),
            data_list=data_list)
        path = osp.join(out_dir, f'{prefix}_{split}.pkl')
        tmp = path + '.tmp'
        with open(tmp, 'wb') as f:
            pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        result[split] = path
        result[f'num_{split}'] = len(data_list)
    if bar is not None:
        print()
    if result['skipped_scenes']:
        print(f'create_nuscenes_infos: skipped {len(result["skipped_scenes"])}'
              ' scenes with missing images')
    return result
