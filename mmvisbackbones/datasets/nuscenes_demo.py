"""A small, deterministic, generated dataset in the exact on-disk format of
nuScenes ``v1.0-mini`` (the 13 JSON tables, ``samples/CAM_*/*.jpg``,
``samples/LIDAR_TOP/*.pcd.bin`` and ``maps/*.png``).

The official ``nuscenes-devkit`` loads it (``NuScenes('v1.0-mini', root)``),
its detection evaluation runs on it, and mmdet3d's ``NuScenesDataset`` /
``NuScenesMetric`` read the info files that
:func:`mmvisbackbones.datasets.nuscenes_infos.create_nuscenes_infos` makes
from it -- the same code paths as real nuScenes.

What is generated
-----------------
* Ten scenes with the real ``v1.0-mini`` scene names (the devkit hard-codes
  the mini splits): ``mini_train`` = scene-0061, -0553, -0655, -0757, -0796,
  -1077, -1094, -1100 and ``mini_val`` = scene-0103, -0916.  Each scene has
  ``frames_per_scene`` key frames (samples) 0.5 s apart (timestamps in
  microseconds) with prev/next links.
* Sensors: ``LIDAR_TOP`` (mounted at [0.986, 0, 1.84] m, rotated -90 deg
  about z like the real one, but with exactly zero roll / pitch) and the six
  cameras at their real nuScenes mounting positions and rotations (camera
  frame: x right, y down, z forward).  The camera intrinsics are those of the
  real 1600 x 900 cameras (focal ~1266 px; the wide CAM_BACK ~809 px) scaled
  per axis to ``img_size``, so the tables describe the written jpgs exactly.
  Every sensor has its own timestamp (cameras fire a few tens of ms from the
  lidar, as in the real data) and its own ``ego_pose``.
* Ego motion: the ego drives a smooth curved path (constant speed, sinusoidal
  yaw rate) on a flat ground plane z = 0 of the global frame (the ego pose
  has z = 0 and pure-yaw rotation, as in nuScenes).
* Objects: every scene holds at least one track of each of the ten detection
  classes (real nuScenes category names: ``vehicle.car``, ``vehicle.truck``,
  ``vehicle.trailer``, ``vehicle.bus.rigid``, ``vehicle.construction``,
  ``vehicle.bicycle``, ``vehicle.motorcycle``, ``human.pedestrian.adult``,
  ``movable_object.trafficcone``, ``movable_object.barrier``), a few extra
  random tracks, and sometimes one ``movable_object.pushable_pullable``
  (a non-detection category, label -1 in mmdet3d).  Sizes are the nuScenes
  class means with +-10 % jitter; objects stand on the ground, are static or
  move with constant velocity along their heading, never overlap each other
  or the ego's path, and are annotated in the samples where they are
  5 - 35 m from the ego (5 - 27 m for cones / barriers), i.e. well inside
  the evaluation class ranges (50 m vehicles, 40 m pedestrians / cycles,
  30 m cones / barriers).  Annotations have valid attributes for their class
  (vehicle.moving / parked / stopped, cycle.with_rider / without_rider,
  pedestrian.moving / standing, none for cones and barriers),
  ``num_lidar_pts`` > 0 (the points really are inside the box in the
  ``.pcd.bin``), ``num_radar_pts`` > 0 and a visibility level computed from
  the rendered images.  Instances link their annotations (prev / next), so
  ``NuScenes.box_velocity`` gives the true velocity.
* Images: each camera image is rendered from the 3-D scene at that camera's
  timestamp: a desaturated sky / ground background (the horizon follows from
  the camera pose; the ground has a faint 4 m checker pattern fixed in the
  global frame, so ego motion is visible) and every object annotated in that
  sample drawn as its projected 3-D box: the visible faces (back-face culled,
  clipped at 0.1 m in front of the camera) filled with the class colour
  (:data:`CLASS_COLORS`, ten saturated, well separated hues) times a per-face
  shade (top 1.0, front 0.9, left 0.75, right 0.65, back 0.5, so the heading
  is visible), far objects first (painter's algorithm).  The same projection
  maths draws an object into every camera that sees it.
* Lidar: a few hundred float32 points (x, y, z, intensity, ring) per sample:
  ground returns plus points inside each annotated box.

Only numpy, Pillow and the standard library are used, so this module can be
imported (and the data generated) without torch, mmdet3d or the devkit.

A stamp ``<root>/.demo_meta.json`` holds the generation parameters and
:data:`FORMAT_VERSION`; a second call with the same parameters finds the
stamp (and all files) and returns without rewriting anything.  The output is
byte-for-byte deterministic for a given seed.  Regenerating deletes stale
files of our own naming scheme under ``samples/`` and the info files
``nuscenes_infos_temporal_*.pkl`` in ``root`` (they would reference tokens
that no longer exist).

Layout::

    root/v1.0-mini/{attribute,calibrated_sensor,category,ego_pose,instance,
                    log,map,sample,sample_annotation,sample_data,scene,
                    sensor,visibility}.json
    root/maps/<token>.png
    root/samples/CAM_FRONT/<logfile>__CAM_FRONT__<timestamp>.jpg  (x6 cams)
    root/samples/LIDAR_TOP/<logfile>__LIDAR_TOP__<timestamp>.pcd.bin
"""
import colorsys
import hashlib
import math
import os

import numpy as np
from PIL import Image, ImageDraw

# the file helpers and stamp file of the COCO / ADE20K demo data
from .demo_data import (META_FILE, _atomic_write_bytes, _read_stamp, _remove_stale,
                        _save_jpg, _save_png, _write_json)

__all__ = ['FORMAT_VERSION', 'VERSION', 'CAMERAS', 'DETECTION_CLASSES',
           'CLASS_COLORS', 'CATEGORY_OF_CLASS', 'MINI_TRAIN_SCENES',
           'MINI_VAL_SCENES', 'make_nuscenes_demo']

#: Bump when the generated content or layout changes, so stale data is
#: regenerated instead of reused.
FORMAT_VERSION = 1

#: Table version written (the devkit's ``version`` argument).
VERSION = 'v1.0-mini'


#: Camera channels in mmdet3d / BEVFormer order.
CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
LIDAR = 'LIDAR_TOP'

#: The ten nuScenes detection classes in mmdet3d's ``NuScenesDataset`` order.
DETECTION_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
                     'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
                     'barrier')

#: The nuScenes category used for each detection class.
CATEGORY_OF_CLASS = {
    'car': 'vehicle.car',
    'truck': 'vehicle.truck',
    'trailer': 'vehicle.trailer',
    'bus': 'vehicle.bus.rigid',
    'construction_vehicle': 'vehicle.construction',
    'bicycle': 'vehicle.bicycle',
    'motorcycle': 'vehicle.motorcycle',
    'pedestrian': 'human.pedestrian.adult',
    'traffic_cone': 'movable_object.trafficcone',
    'barrier': 'movable_object.barrier',
}
#: Category of the occasional non-detection object (mmdet3d label -1).
OTHER_CATEGORY = 'movable_object.pushable_pullable'


def _hue_rgb(hue_deg):
    r, g, b = colorsys.hsv_to_rgb(hue_deg / 360.0, 0.9, 0.95)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


#: Fully lit RGB colour of each detection class: ten hues 36 deg apart at
#: saturation 0.9, value 0.95 (faces are drawn at this colour times a shade
#: in [0.5, 1], which keeps the hue).
CLASS_COLORS = {name: _hue_rgb(36.0 * i)
                for i, name in enumerate(DETECTION_CLASSES)}
OTHER_COLOR = (150, 128, 105)   # desaturated brown: non-detection objects

#: Per-face shade factors (box frame: +x front, -x back, +y left, -y right).
FACE_SHADES = dict(top=1.0, front=0.9, left=0.75, right=0.65, back=0.5)

#: The devkit's hard-coded mini splits (nuscenes.utils.splits).
MINI_TRAIN_SCENES = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757',
                     'scene-0796', 'scene-1077', 'scene-1094', 'scene-1100')
MINI_VAL_SCENES = ('scene-0103', 'scene-0916')
_SCENES = tuple(sorted(MINI_TRAIN_SCENES + MINI_VAL_SCENES))

# (location, logfile) of each scene, modelled on the real mini split
_SCENE_LOGS = {
    'scene-0061': ('singapore-onenorth', 'n015-2018-07-24-11-22-45+0800'),
    'scene-0103': ('boston-seaport', 'n008-2018-08-01-15-16-36-0400'),
    'scene-0553': ('boston-seaport', 'n008-2018-08-28-16-43-51-0400'),
    'scene-0655': ('boston-seaport', 'n008-2018-08-27-11-48-51-0400'),
    'scene-0757': ('boston-seaport', 'n008-2018-08-30-15-16-55-0400'),
    'scene-0796': ('singapore-queenstown', 'n015-2018-10-02-10-50-40+0800'),
    'scene-0916': ('singapore-queenstown', 'n015-2018-10-08-15-36-50+0800'),
    'scene-1077': ('singapore-hollandvillage',
                   'n015-2018-11-21-19-38-26+0800'),
    'scene-1094': ('singapore-hollandvillage',
                   'n015-2018-11-21-19-58-31+0800'),
    'scene-1100': ('singapore-hollandvillage',
                   'n015-2018-11-21-19-21-35+0800'),
}
_LOCATIONS = ('singapore-onenorth', 'boston-seaport', 'singapore-queenstown',
              'singapore-hollandvillage')

# Real nuScenes sensor calibration (scene-0061).  The camera intrinsics are
# for the 1600 x 900 images and are scaled to ``img_size``.
REAL_IMG_SIZE = (1600, 900)   # (W, H)
_CAMERA_CALIB = {
    'CAM_FRONT': dict(
        translation=[1.70079118954, 0.0159456324149, 1.51095763913],
        rotation=[0.4998015430569128, -0.5030316162024876,
                  0.4997798114386805, -0.49737083824542755],
        focal=1266.417203046554, principal=(816.2670197447984,
                                            491.50706579294757),
        offset_us=12000),
    'CAM_FRONT_RIGHT': dict(
        translation=[1.5508477543, -0.493404796419, 1.49574800619],
        rotation=[0.2060347966337182, -0.2026940577919598,
                  0.6824507824531167, -0.6713610884174485],
        focal=1260.8474446004698, principal=(807.968244525554,
                                             495.3344268742088),
        offset_us=20000),
    'CAM_FRONT_LEFT': dict(
        translation=[1.52387798135, 0.494631336551, 1.50932822144],
        rotation=[0.6757265034669446, -0.6736266522251881,
                  0.21214015046209478, -0.21122827103904068],
        focal=1272.5979470598488, principal=(826.6154927353808,
                                             479.75165386361925),
        offset_us=4000),
    'CAM_BACK': dict(
        translation=[0.0283260309358, 0.00345136761476, 1.57910346144],
        rotation=[0.5037872666382278, -0.49740249788611096,
                  -0.4941850223835201, 0.5045496097725578],
        focal=809.2209905677063, principal=(829.2196003259838,
                                            481.77842384512485),
        offset_us=-37000),
    'CAM_BACK_LEFT': dict(
        translation=[1.03569100218, 0.484795032713, 1.59097014818],
        rotation=[0.6924185592174665, -0.7031619420114925,
                  -0.11648342771943819, 0.11203317912370753],
        focal=1256.7414812095406, principal=(792.1125740759628,
                                             492.7757465151356),
        offset_us=-21000),
    'CAM_BACK_RIGHT': dict(
        translation=[1.0148780988, -0.480568219723, 1.56239545128],
        rotation=[0.12280980120078765, -0.132400842670559,
                  -0.7004305821388234, 0.690496031265798],
        focal=1259.5137405846733, principal=(807.2529053838625,
                                             501.19579884916527),
        offset_us=29000),
}
# Real LIDAR_TOP: [0.985793, 0, 1.84019] m, yaw ~ -90 deg (x to the right,
# y forward).  Roll / pitch are set to exactly 0 so that a box that is
# upright in the ego frame is upright in the lidar frame (mmdet3d keeps only
# the yaw of lidar-frame boxes).
_LIDAR_CALIB = dict(translation=[0.985793, 0.0, 1.84019], yaw_deg=-90.0)

# Per detection class: nuScenes mean size (w, l, h), speed range (m/s) when
# moving, probability of moving, max annotation distance (m).
_CLASS_SPECS = {
    'car': dict(wlh=(1.95, 4.62, 1.73), speed=(2.0, 9.0), p_move=0.5,
                max_dist=35.0),
    'truck': dict(wlh=(2.52, 6.93, 2.84), speed=(2.0, 7.0), p_move=0.4,
                  max_dist=35.0),
    'trailer': dict(wlh=(2.92, 10.0, 3.6), speed=(2.0, 5.0), p_move=0.2,
                    max_dist=35.0),
    'bus': dict(wlh=(2.95, 11.19, 3.49), speed=(2.0, 7.0), p_move=0.5,
                max_dist=35.0),
    'construction_vehicle': dict(wlh=(2.82, 6.56, 3.19), speed=(0.5, 2.0),
                                 p_move=0.3, max_dist=35.0),
    'bicycle': dict(wlh=(0.61, 1.71, 1.30), speed=(1.5, 5.0), p_move=0.6,
                    max_dist=35.0),
    'motorcycle': dict(wlh=(0.77, 2.11, 1.47), speed=(2.0, 8.0), p_move=0.5,
                       max_dist=35.0),
    'pedestrian': dict(wlh=(0.67, 0.73, 1.77), speed=(0.6, 1.8), p_move=0.6,
                       max_dist=35.0),
    'traffic_cone': dict(wlh=(0.41, 0.41, 1.08), speed=(0.0, 0.0),
                         p_move=0.0, max_dist=27.0),
    'barrier': dict(wlh=(2.49, 0.48, 0.99), speed=(0.0, 0.0), p_move=0.0,
                    max_dist=27.0),
    None: dict(wlh=(0.6, 0.8, 1.0), speed=(0.0, 0.0), p_move=0.0,
               max_dist=27.0),
}
_MIN_DIST = 5.0           # no annotation closer than this to the ego
_EGO_CLEARANCE = 2.5      # free metres between an object and the ego path
_OBJ_CLEARANCE = 0.5      # free metres between two objects
_SAMPLE_DT_US = 500000    # 2 Hz key frames
_NEAR_PLANE = 0.1         # clip faces this close to the camera (m)

# All 23 nuScenes categories (the category table is the real one).
_ALL_CATEGORIES = (
    'animal', 'human.pedestrian.adult', 'human.pedestrian.child',
    'human.pedestrian.construction_worker',
    'human.pedestrian.personal_mobility', 'human.pedestrian.police_officer',
    'human.pedestrian.stroller', 'human.pedestrian.wheelchair',
    'movable_object.barrier', 'movable_object.debris',
    'movable_object.pushable_pullable', 'movable_object.trafficcone',
    'static_object.bicycle_rack', 'vehicle.bicycle', 'vehicle.bus.bendy',
    'vehicle.bus.rigid', 'vehicle.car', 'vehicle.construction',
    'vehicle.emergency.ambulance', 'vehicle.emergency.police',
    'vehicle.motorcycle', 'vehicle.trailer', 'vehicle.truck')
_ATTRIBUTES = (
    ('vehicle.moving', 'Vehicle is moving.'),
    ('vehicle.stopped', 'Vehicle, with a driver/rider in/on it, is currently '
                        'stationary but has an intent to move.'),
    ('vehicle.parked', 'Vehicle is stationary (usually for longer duration) '
                       'with no immediate intent to move.'),
    ('cycle.with_rider', 'There is a rider on the bicycle or motorcycle.'),
    ('cycle.without_rider', 'There is NO rider on the bicycle or '
                            'motorcycle.'),
    ('pedestrian.sitting_lying_down', 'The human is sitting or lying '
                                      'down.'),
    ('pedestrian.standing', 'The human is standing.'),
    ('pedestrian.moving', 'The human is moving.'),
)
_VISIBILITY = (
    ('1', 'v0-40', 'visibility of whole object is between 0 and 40%'),
    ('2', 'v40-60', 'visibility of whole object is between 40 and 60%'),
    ('3', 'v60-80', 'visibility of whole object is between 60 and 80%'),
    ('4', 'v80-100', 'visibility of whole object is between 80 and 100%'),
)
_TABLES = ('attribute', 'calibrated_sensor', 'category', 'ego_pose',
           'instance', 'log', 'map', 'sample', 'sample_annotation',
           'sample_data', 'scene', 'sensor', 'visibility')
_INFO_FILE_RE = r'nuscenes_infos_temporal_(train|val|test)\.pkl'


# --------------------------------------------------------------------------
# small geometry helpers (float64 throughout)
# --------------------------------------------------------------------------
def _token(*parts):
    """Deterministic 32-hex token (like nuScenes' tokens)."""
    return hashlib.md5('/'.join(str(p) for p in parts).encode()).hexdigest()


def _quat_normalize(q):
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def _quat_to_mat(q):
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = _quat_normalize(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _yaw_quat(yaw):
    """Quaternion (w, x, y, z) of a rotation by ``yaw`` about +z."""
    return [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]


def _yaw_mat(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def _intrinsics(cam, img_size):
    """3x3 intrinsic matrix of ``cam`` scaled to ``img_size`` = (W, H)."""
    c = _CAMERA_CALIB[cam]
    sx = img_size[0] / float(REAL_IMG_SIZE[0])
    sy = img_size[1] / float(REAL_IMG_SIZE[1])
    return np.array([[c['focal'] * sx, 0.0, c['principal'][0] * sx],
                     [0.0, c['focal'] * sy, c['principal'][1] * sy],
                     [0.0, 0.0, 1.0]])


def static_lidar2img(img_size=REAL_IMG_SIZE) -> np.ndarray:
    """(6, 4, 4) LIDAR_TOP -> image matrices of the six cameras (``CAMERAS``
    order) from the real scene-0061 calibration the demo data uses, for images
    of ``img_size`` = (W, H) and a vehicle at rest (lidar and cameras at one
    ego pose): what BEVFormer's ``lidar2img`` holds.  For tools that need a
    realistic camera rig without a dataset (tools/analysis/get_flops.py)."""
    r_lidar = _quat_to_mat(_yaw_quat(math.radians(_LIDAR_CALIB['yaw_deg'])))  # lidar -> ego
    t_lidar = np.asarray(_LIDAR_CALIB['translation'])
    mats = []
    for cam in CAMERAS:
        r_cam = _quat_to_mat(_CAMERA_CALIB[cam]['rotation'])                  # cam -> ego
        t_cam = np.asarray(_CAMERA_CALIB[cam]['translation'])
        lidar2cam = np.eye(4)
        lidar2cam[:3, :3] = r_cam.T @ r_lidar
        lidar2cam[:3, 3] = r_cam.T @ (t_lidar - t_cam)
        K = np.eye(4)
        K[:3, :3] = _intrinsics(cam, img_size)
        mats.append(K @ lidar2cam)
    return np.stack(mats)


def _box_corners(center, wlh, yaw):
    """(8, 3) corners of a nuScenes box; corner order: x (length) sign
    ++++----, y (width) sign ++--++--, z sign +-+-+-+-."""
    w, l, h = wlh
    sx = np.array([1, 1, 1, 1, -1, -1, -1, -1], dtype=np.float64) * l / 2
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) * w / 2
    sz = np.array([1, -1, 1, -1, 1, -1, 1, -1], dtype=np.float64) * h / 2
    local = np.stack([sx, sy, sz], axis=1)
    return local @ _yaw_mat(yaw).T + np.asarray(center, dtype=np.float64)


# faces as corner indices in polygon order, with their local outward normal
_FACES = (
    ('top', (0, 2, 6, 4), (0, 0, 1)),
    ('front', (0, 1, 3, 2), (1, 0, 0)),
    ('back', (4, 6, 7, 5), (-1, 0, 0)),
    ('left', (0, 4, 5, 1), (0, 1, 0)),
    ('right', (2, 3, 7, 6), (0, -1, 0)),
)


def _clip_near(poly, near=_NEAR_PLANE):
    """Sutherland-Hodgman clip of a camera-frame polygon (K, 3) against the
    plane z = near; returns the part with z >= near (possibly empty)."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


# --------------------------------------------------------------------------
# scene simulation
# --------------------------------------------------------------------------
class _EgoPath:
    """Smooth ego trajectory: constant speed, sinusoidal yaw rate."""

    def __init__(self, rng):
        self.p0 = rng.uniform([300.0, 600.0], [1800.0, 1800.0])
        self.yaw0 = float(rng.uniform(-math.pi, math.pi))
        self.speed = float(rng.uniform(3.0, 8.0))
        self.amp = float(rng.uniform(0.08, 0.25)) * rng.choice([-1.0, 1.0])
        self.period = float(rng.uniform(4.0, 10.0))
        self.phase = float(rng.uniform(0.0, 2 * math.pi))

    def yaw(self, t):
        k = 2 * math.pi / self.period
        return (self.yaw0 + self.amp / k
                * (math.cos(self.phase) - np.cos(k * np.asarray(t)
                                                 + self.phase)))

    def position(self, t):
        """Global (x, y) at time ``t`` (s) by fine trapezoid integration."""
        n = max(2, int(math.ceil(abs(t) / 0.002)) + 1)
        ts = np.linspace(0.0, t, n)
        yaws = self.yaw(ts)
        vx, vy = self.speed * np.cos(yaws), self.speed * np.sin(yaws)
        dt = ts[1] - ts[0]
        x = self.p0[0] + dt * (vx.sum() - 0.5 * (vx[0] + vx[-1]))
        y = self.p0[1] + dt * (vy.sum() - 0.5 * (vy[0] + vy[-1]))
        return np.array([x, y])

    def pose(self, t):
        """(translation (3,), yaw) of the ego at time ``t`` (s)."""
        xy = self.position(t)
        return np.array([xy[0], xy[1], 0.0]), float(self.yaw(t))


class _Track:
    """An object with constant velocity on the ground plane."""

    def __init__(self, cls, category, wlh, yaw, ref_pos, ref_t, speed,
                 color):
        self.cls = cls
        self.category = category
        self.wlh = tuple(float(v) for v in wlh)
        self.yaw = float(yaw)
        self.ref_pos = np.asarray(ref_pos, dtype=np.float64)   # (x, y)
        self.ref_t = float(ref_t)
        self.speed = float(speed)
        self.vel = speed * np.array([math.cos(yaw), math.sin(yaw)])
        self.color = color
        self.radius = 0.5 * math.hypot(wlh[0], wlh[1])
        self.frames = []

    def xy(self, t):
        return self.ref_pos + self.vel * (np.asarray(t)[..., None]
                                          - self.ref_t)

    def center(self, t):
        x, y = self.xy(t)
        return np.array([x, y, self.wlh[2] / 2.0])

    @property
    def moving(self):
        return self.speed > 0.0


def _attribute(track, rng):
    cls = track.cls
    if cls in ('car', 'truck', 'trailer', 'bus', 'construction_vehicle'):
        if track.moving:
            return 'vehicle.moving'
        return 'vehicle.parked' if rng.random() < 0.7 else 'vehicle.stopped'
    if cls in ('bicycle', 'motorcycle'):
        return 'cycle.with_rider' if track.moving else 'cycle.without_rider'
    if cls == 'pedestrian':
        return 'pedestrian.moving' if track.moving else 'pedestrian.standing'
    return None


def _simulate_scene(rng, sample_times):
    """Ego path and object tracks of one scene.

    ``sample_times`` are the key frame times in seconds from the scene
    start.  Returns (ego path, list of tracks); ``track.frames`` lists the
    (contiguous) frame indices where the track is annotated.
    """
    ego = _EgoPath(rng)
    duration = float(sample_times[-1]) + 0.1
    fine_t = np.arange(-0.1, duration + 0.05, 0.1)
    ego_fine = np.stack([ego.position(t) for t in fine_t])     # (T, 2)
    ego_at_samples = [ego.pose(t) for t in sample_times]

    classes = list(DETECTION_CLASSES)
    rng.shuffle(classes)
    n_extra = int(rng.integers(0, 3))
    classes += [DETECTION_CLASSES[int(i)]
                for i in rng.integers(0, len(DETECTION_CLASSES), n_extra)]
    if rng.random() < 0.4:
        classes.append(None)

    tracks = []
    for cls in classes:
        spec = _CLASS_SPECS[cls]
        color = CLASS_COLORS[cls] if cls is not None else OTHER_COLOR
        category = CATEGORY_OF_CLASS[cls] if cls is not None \
            else OTHER_CATEGORY
        for _ in range(300):
            wlh = np.asarray(spec['wlh']) * rng.uniform(0.9, 1.1, size=3)
            k_ref = int(rng.integers(len(sample_times)))
            t_ref = float(sample_times[k_ref])
            ego_t, ego_yaw = ego_at_samples[k_ref]
            dist = float(rng.uniform(8.0, spec['max_dist'] - 3.0))
            bearing = float(rng.uniform(-math.pi, math.pi))
            ref_pos = ego_t[:2] + dist * np.array(
                [math.cos(ego_yaw + bearing), math.sin(ego_yaw + bearing)])
            moving = rng.random() < spec['p_move']
            if cls == 'pedestrian' or not moving:
                yaw = float(rng.uniform(-math.pi, math.pi))
            else:   # traffic: roughly parallel to the ego, either direction
                yaw = ego_yaw + (math.pi if rng.random() < 0.4 else 0.0) \
                    + float(rng.normal(0.0, 0.15))
            yaw = _wrap(yaw)
            speed = float(rng.uniform(*spec['speed'])) if moving else 0.0
            tr = _Track(cls, category, wlh, yaw, ref_pos, t_ref, speed,
                        color)
            obj_fine = tr.xy(fine_t)                                 # (T, 2)
            # never on the ego's path (at any time, anywhere on the path)
            d_path = np.linalg.norm(obj_fine[:, None] - ego_fine[None],
                                    axis=-1).min()
            if d_path < tr.radius + _EGO_CLEARANCE + 1.0:
                continue
            # never overlapping another object (time-synchronous check)
            ok = True
            for other in tracks:
                d = np.linalg.norm(obj_fine - other.xy(fine_t), axis=-1)
                if d.min() < tr.radius + other.radius + _OBJ_CLEARANCE:
                    ok = False
                    break
            if not ok:
                continue
            # annotated where within range: contiguous run around k_ref
            inside = []
            for k, t in enumerate(sample_times):
                d = np.linalg.norm(tr.xy(t) - ego_at_samples[k][0][:2])
                inside.append(_MIN_DIST <= d <= spec['max_dist'])
            if not inside[k_ref]:
                continue
            lo = hi = k_ref
            while lo > 0 and inside[lo - 1]:
                lo -= 1
            while hi + 1 < len(inside) and inside[hi + 1]:
                hi += 1
            tr.frames = list(range(lo, hi + 1))
            tracks.append(tr)
            break
    return ego, tracks


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
class _Camera:
    """A camera at one timestamp: global->camera transform and K."""

    def __init__(self, name, img_size, ego_t, ego_yaw):
        calib = _CAMERA_CALIB[name]
        self.name = name
        self.size = img_size
        self.K = _intrinsics(name, img_size)
        r_c = _quat_to_mat(calib['rotation'])                 # cam -> ego
        r_e = _yaw_mat(ego_yaw)                               # ego -> global
        self.r_cam2global = r_e @ r_c
        self.pos = r_e @ np.asarray(calib['translation']) + ego_t

    def to_cam(self, pts):
        return (np.asarray(pts) - self.pos) @ self.r_cam2global

    def project(self, pts_cam):
        uvw = pts_cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]


def _background(cam, noise_rng):
    """Sky / ground image (H, W, 3) float32 for ``cam``."""
    w, h = cam.size
    k = cam.K
    x = ((np.arange(w) - k[0, 2]) / k[0, 0]).astype(np.float32)[None, :]
    y = ((np.arange(h) - k[1, 2]) / k[1, 1]).astype(np.float32)[:, None]
    r = cam.r_cam2global.astype(np.float32)
    # global ray direction of every pixel (the ray is linear in x and y)
    dx = r[0, 0] * x + r[0, 1] * y + r[0, 2]
    dy = r[1, 0] * x + r[1, 1] * y + r[1, 2]
    dz = r[2, 0] * x + r[2, 1] * y + r[2, 2]
    horiz = np.sqrt(dx * dx + dy * dy)
    # sky: from light haze at the horizon to a pale blue zenith
    t = np.clip(dz / (0.55 * horiz), 0.0, 1.0)[..., None]
    sky = (1 - t) * np.array([188.0, 196.0, 204.0], np.float32) \
        + t * np.array([112.0, 142.0, 186.0], np.float32)
    # ground: dark grey asphalt with a faint 4 m checker in the global frame
    ground_mask = dz < -1e-6
    s = np.where(ground_mask, -cam.pos[2] / np.where(ground_mask, dz, -1.0),
                 0.0).astype(np.float32)
    gx = (cam.pos[0] / 4.0) + s * (dx / 4.0)
    gy = (cam.pos[1] / 4.0) + s * (dy / 4.0)
    dist = s * np.sqrt(horiz * horiz + dz * dz)
    checker = ((np.floor(gx) + np.floor(gy)) % 2) * 2 - 1
    fade = np.clip(1.0 - dist / 45.0, 0.0, 1.0)
    level = (86.0 + 8.0 * checker * fade)[..., None] \
        + np.array([0.0, 0.0, -3.0], np.float32)
    far = np.array([104.0, 104.0, 100.0], np.float32)
    ground = fade[..., None] * level + (1 - fade[..., None]) * far
    img = np.where(ground_mask[..., None], ground, sky)
    img += 2.0 * noise_rng.standard_normal((h, w, 1), dtype=np.float32)
    return img


def _face_polys(cam, corners_g, yaw):
    """Visible faces of a box as (name, (K, 2) pixel polygon) in draw
    order (faces of a convex box never overlap each other)."""
    r = _yaw_mat(yaw)
    corners_c = cam.to_cam(corners_g)
    out = []
    for name, idx, normal in _FACES:
        n_g = r @ np.asarray(normal, dtype=np.float64)
        center = corners_g[list(idx)].mean(axis=0)
        if np.dot(n_g, cam.pos - center) <= 0:    # back face
            continue
        poly = _clip_near(corners_c[list(idx)])
        if len(poly) < 3:
            continue
        out.append((name, cam.project(poly)))
    return out


def _render(cam, objects, noise_rng):
    """Render one camera image.

    ``objects``: list of (track, center (3,) at the camera time).  Returns
    (uint8 image (H, W, 3), visible pixel count per object, unoccluded pixel
    count per object).
    """
    w, h = cam.size
    img = Image.fromarray(np.clip(np.round(_background(cam, noise_rng)),
                                  0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    ids = Image.new('L', (w, h), 0)
    draw_ids = ImageDraw.Draw(ids)
    order = sorted(range(len(objects)), key=lambda j: -np.linalg.norm(
        objects[j][1] - cam.pos))
    full = np.zeros(len(objects), dtype=np.int64)
    for j in order:
        track, center = objects[j]
        corners = _box_corners(center, track.wlh, track.yaw)
        faces = _face_polys(cam, corners, track.yaw)
        if not faces:
            continue
        alone = Image.new('L', (w, h), 0)
        draw_alone = ImageDraw.Draw(alone)
        for name, uv in faces:
            shade = FACE_SHADES[name]
            color = tuple(int(round(c * shade)) for c in track.color)
            xy = [(float(x), float(y)) for x, y in uv]
            draw.polygon(xy, fill=color)
            draw_ids.polygon(xy, fill=j + 1)
            draw_alone.polygon(xy, fill=1)
        full[j] = int(np.asarray(alone).sum())
    id_arr = np.asarray(ids)
    visible = np.bincount(id_arr.ravel(), minlength=len(objects) + 1)[1:]
    return np.asarray(img), visible[:len(objects)], full


def _visibility_token(frac):
    if frac >= 0.8:
        return '4'
    if frac >= 0.6:
        return '3'
    if frac >= 0.4:
        return '2'
    return '1'


def _lidar_points(rng, lidar_pose, boxes):
    """(N, 5) float32 points (x, y, z, intensity, ring) in the lidar frame.

    ``lidar_pose`` = (R lidar->global, t); ``boxes`` = list of (center,
    wlh, yaw) in global.  Returns (points, per-box point count)."""
    r_lg, t_lg = lidar_pose
    height = _LIDAR_CALIB['translation'][2]
    n_ground = 220
    rad = rng.uniform(3.0, 45.0, n_ground)
    ang = rng.uniform(-math.pi, math.pi, n_ground)
    ground = np.stack([rad * np.cos(ang), rad * np.sin(ang),
                       np.full(n_ground, -height)
                       + rng.normal(0, 0.02, n_ground)], axis=1)
    chunks = [ground]
    intens = [rng.uniform(2.0, 20.0, n_ground)]
    for center, wlh, yaw in boxes:
        w, l, h = wlh
        d = max(1.0, float(np.linalg.norm((np.asarray(center) - t_lg)[:2])))
        area = (l + w) * h
        n = int(min(150, max(1, round(360.0 * area / d ** 2))))
        local = rng.uniform(-0.45, 0.45, size=(n, 3)) * np.array([l, w, h])
        pts_g = local @ _yaw_mat(yaw).T + np.asarray(center)
        chunks.append((pts_g - t_lg) @ r_lg)
        intens.append(rng.uniform(20.0, 100.0, n))
    # float32 as stored, so the counts below match the file exactly
    xyz = np.concatenate(chunks).astype(np.float32).astype(np.float64)
    inten = np.concatenate(intens)
    # num_lidar_pts = every point inside the box (as the devkit counts them)
    pts_g = xyz @ r_lg.T + t_lg
    counts = []
    for center, wlh, yaw in boxes:
        w, l, h = wlh
        local = (pts_g - np.asarray(center)) @ _yaw_mat(yaw)
        inside = np.all(np.abs(local) <= np.array([l, w, h]) / 2.0, axis=1)
        counts.append(int(inside.sum()))
    elev = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    ring = np.clip(np.round((elev + 30.0) / 40.0 * 31.0), 0, 31)
    pts = np.concatenate([xyz, inten[:, None], ring[:, None]], axis=1)
    return pts.astype(np.float32), counts


# --------------------------------------------------------------------------
# file helpers
# --------------------------------------------------------------------------
def _norm_img_size(img_size):
    if isinstance(img_size, int):
        img_size = (img_size, img_size * 9 // 16)
    w, h = (int(v) for v in img_size)
    if w < 32 or h < 18:
        raise ValueError(f'img_size (W, H) too small: {img_size}')
    return w, h


# --------------------------------------------------------------------------
# main entry
# --------------------------------------------------------------------------
def _plan(frames_per_scene, seed):
    """Per-scene timing and file names (cheap; no rendering)."""
    scenes = []
    for s_idx, name in enumerate(_SCENES):
        location, logfile = _SCENE_LOGS[name]
        rng = np.random.default_rng(np.random.SeedSequence(
            [int(seed), 7, s_idx]))
        t0 = 1531883530000000 + s_idx * 3600000000 + int(
            rng.integers(0, 1000000))
        ts = [t0]
        for _ in range(frames_per_scene - 1):
            ts.append(ts[-1] + _SAMPLE_DT_US + int(rng.integers(-4000, 4001)))
        sensor_ts = []
        for k, t in enumerate(ts):
            d = {LIDAR: t}
            for cam in CAMERAS:
                d[cam] = t + _CAMERA_CALIB[cam]['offset_us'] + int(
                    rng.integers(-1500, 1501))
            sensor_ts.append(d)
        files = []
        for d in sensor_ts:
            f = {LIDAR: f'samples/{LIDAR}/{logfile}__{LIDAR}__{d[LIDAR]}'
                        '.pcd.bin'}
            for cam in CAMERAS:
                f[cam] = f'samples/{cam}/{logfile}__{cam}__{d[cam]}.jpg'
            files.append(f)
        scenes.append(dict(index=s_idx, name=name, location=location,
                           logfile=logfile, timestamps=ts,
                           sensor_ts=sensor_ts, files=files))
    return scenes


def make_nuscenes_demo(root, frames_per_scene=8, img_size=(320, 180), seed=0,
                       force=False):
    """Write the generated nuScenes-format dataset (v1.0-mini tables) under
    ``root``.

    Args:
        root (str): dataset root (``data_root`` of an mmdet3d config and the
            devkit's ``dataroot``).
        frames_per_scene (int): key frames (samples) per scene, >= 2; there
            are always 10 scenes (8 mini_train, 2 mini_val).
        img_size (tuple[int, int]): camera image size as **(W, H)**, e.g.
            (320, 180) (the real 1600 x 900 scaled by 0.2).  The intrinsics
            are scaled per axis to it.
        seed (int): random seed; the same seed gives identical bytes.
        force (bool): regenerate even if an up-to-date copy exists.

    Returns:
        dict: ``root``, ``version`` ('v1.0-mini'), ``table_dir``,
        ``num_scenes``, ``num_samples``, ``num_train_samples``,
        ``num_val_samples``, ``num_instances``, ``num_annotations``,
        ``num_images``, ``class_counts`` (annotations per detection class),
        ``val_class_counts``, ``train_scenes``, ``val_scenes``,
        ``img_size`` [W, H], ``frames_per_scene``, ``classes``, ``seed`` and
        ``generated`` (False when an up-to-date copy was reused).
    """
    root = os.path.abspath(os.fspath(root))
    frames_per_scene = int(frames_per_scene)
    if frames_per_scene < 2:
        raise ValueError('frames_per_scene must be >= 2')
    if int(seed) < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    img_size = _norm_img_size(img_size)
    params = dict(kind='nuscenes', format_version=FORMAT_VERSION,
                  version=VERSION, frames_per_scene=frames_per_scene,
                  img_size=list(img_size), seed=int(seed))
    plan = _plan(frames_per_scene, seed)
    table_dir = os.path.join(root, VERSION)
    data_files = [os.path.join(root, f) for sc in plan for fr in sc['files']
                  for f in fr.values()]
    table_files = [os.path.join(table_dir, t + '.json') for t in _TABLES]

    def summary(stats, generated):
        out = dict(root=root, version=VERSION, table_dir=table_dir,
                   train_scenes=list(MINI_TRAIN_SCENES),
                   val_scenes=list(MINI_VAL_SCENES),
                   img_size=list(img_size),
                   frames_per_scene=frames_per_scene,
                   classes=list(DETECTION_CLASSES), seed=int(seed),
                   generated=generated)
        out.update(stats)
        return out

    if not force:
        stamp = _read_stamp(root)
        if (isinstance(stamp, dict) and stamp.get('params') == params
                and all(os.path.isfile(p) for p in table_files + data_files)
                and os.path.isfile(os.path.join(root, stamp.get(
                    'map_file', 'maps/-')))):
            return summary(stamp['stats'], False)

    stamp_path = os.path.join(root, META_FILE)
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    _remove_stale(root, _INFO_FILE_RE, set())
    os.makedirs(table_dir, exist_ok=True)
    os.makedirs(os.path.join(root, 'maps'), exist_ok=True)
    for ch in (LIDAR, ) + CAMERAS:
        os.makedirs(os.path.join(root, 'samples', ch), exist_ok=True)

    tables = {t: [] for t in _TABLES}
    tok = lambda *p: _token(seed, *p)  # noqa: E731

    # static tables
    cat_tok = {}
    for name in _ALL_CATEGORIES:
        cat_tok[name] = tok('category', name)
        tables['category'].append(dict(token=cat_tok[name], name=name,
                                       description=f'{name} (generated).'))
    attr_tok = {}
    for name, desc in _ATTRIBUTES:
        attr_tok[name] = tok('attribute', name)
        tables['attribute'].append(dict(token=attr_tok[name], name=name,
                                        description=desc))
    for t, level, desc in _VISIBILITY:
        tables['visibility'].append(dict(description=desc, token=t,
                                         level=level))
    sensor_tok = {}
    for ch in (LIDAR, ) + CAMERAS:
        sensor_tok[ch] = tok('sensor', ch)
        tables['sensor'].append(dict(
            token=sensor_tok[ch], channel=ch,
            modality='lidar' if ch == LIDAR else 'camera'))

    lidar_rot = _yaw_quat(math.radians(_LIDAR_CALIB['yaw_deg']))
    r_lidar = _quat_to_mat(lidar_rot)
    t_lidar = np.asarray(_LIDAR_CALIB['translation'])
    log_tok = {}
    class_counts = {c: 0 for c in DETECTION_CLASSES}
    val_class_counts = {c: 0 for c in DETECTION_CLASSES}
    n_samples = dict(train=0, val=0)
    keep = {ch: set() for ch in (LIDAR, ) + CAMERAS}

    for sc in plan:
        s_idx, s_name = sc['index'], sc['name']
        split = 'val' if s_name in MINI_VAL_SCENES else 'train'
        rng = np.random.default_rng(np.random.SeedSequence(
            [int(seed), 11, s_idx]))
        noise_rng = np.random.default_rng(np.random.SeedSequence(
            [int(seed), 13, s_idx]))
        ts = sc['timestamps']
        t0 = ts[0]
        rel = [(t - t0) * 1e-6 for t in ts]
        ego, tracks = _simulate_scene(rng, rel)

        log_tok[s_name] = tok('log', s_name)
        tables['log'].append(dict(
            token=log_tok[s_name], logfile=sc['logfile'], vehicle=
            sc['logfile'].split('-')[0],
            date_captured='-'.join(sc['logfile'].split('-')[1:4]),
            location=sc['location']))
        calib_tok = {}
        for ch in (LIDAR, ) + CAMERAS:
            calib_tok[ch] = tok('calibrated_sensor', s_name, ch)
            if ch == LIDAR:
                rec = dict(translation=list(_LIDAR_CALIB['translation']),
                           rotation=lidar_rot, camera_intrinsic=[])
            else:
                c = _CAMERA_CALIB[ch]
                rec = dict(translation=list(c['translation']),
                           rotation=[float(v) for v in
                                     _quat_normalize(c['rotation'])],
                           camera_intrinsic=_intrinsics(ch,
                                                        img_size).tolist())
            rec.update(token=calib_tok[ch], sensor_token=sensor_tok[ch])
            tables['calibrated_sensor'].append(rec)

        scene_tok = tok('scene', s_name)
        sample_toks = [tok('sample', s_name, k) for k in range(len(ts))]
        sd_toks = [{ch: tok('sample_data', s_name, k, ch)
                    for ch in (LIDAR, ) + CAMERAS} for k in range(len(ts))]
        n_samples[split] += len(ts)
        tables['scene'].append(dict(
            token=scene_tok, log_token=log_tok[s_name],
            nbr_samples=len(ts), first_sample_token=sample_toks[0],
            last_sample_token=sample_toks[-1], name=s_name,
            description=f'Generated scene {s_name}: curved drive, '
                        f'{len(tracks)} objects.'))

        # instances and their annotation tokens
        ann_tok = {}
        for i, tr in enumerate(tracks):
            for k in tr.frames:
                ann_tok[(i, k)] = tok('sample_annotation', s_name, i, k)
            tables['instance'].append(dict(
                token=tok('instance', s_name, i),
                category_token=cat_tok[tr.category],
                nbr_annotations=len(tr.frames),
                first_annotation_token=ann_tok[(i, tr.frames[0])],
                last_annotation_token=ann_tok[(i, tr.frames[-1])]))
        attrs = [_attribute(tr, rng) for tr in tracks]

        for k, t_us in enumerate(ts):
            tables['sample'].append(dict(
                token=sample_toks[k], timestamp=t_us,
                prev=sample_toks[k - 1] if k > 0 else '',
                next=sample_toks[k + 1] if k + 1 < len(ts) else '',
                scene_token=scene_tok))
            present = [i for i, tr in enumerate(tracks) if k in tr.frames]
            vis_px = np.zeros(len(present))
            full_px = np.zeros(len(present))
            for ch in (LIDAR, ) + CAMERAS:
                ts_ch = sc['sensor_ts'][k][ch]
                t_rel = (ts_ch - t0) * 1e-6
                ego_t, ego_yaw = ego.pose(t_rel)
                sd_tok = sd_toks[k][ch]
                tables['ego_pose'].append(dict(
                    token=sd_tok, timestamp=ts_ch,
                    rotation=_yaw_quat(ego_yaw),
                    translation=[float(v) for v in ego_t]))
                fname = sc['files'][k][ch]
                keep[ch].add(os.path.basename(fname))
                if ch == LIDAR:
                    r_e = _yaw_mat(ego_yaw)
                    lidar_pose = (r_e @ r_lidar, r_e @ t_lidar + ego_t)
                    boxes = [(tracks[i].center(rel[k]), tracks[i].wlh,
                              tracks[i].yaw) for i in present]
                    pts, counts = _lidar_points(rng, lidar_pose, boxes)
                    _atomic_write_bytes(os.path.join(root, fname),
                                        pts.tobytes())
                    lidar_counts = counts
                    width = height = 0
                    fmt = 'pcd'
                else:
                    cam = _Camera(ch, img_size, ego_t, ego_yaw)
                    objs = [(tracks[i], tracks[i].center(t_rel))
                            for i in present]
                    img, vis, full = _render(cam, objs, noise_rng)
                    vis_px += vis
                    full_px += full
                    _save_jpg(os.path.join(root, fname), img)
                    width, height = img_size
                    fmt = 'jpg'
                tables['sample_data'].append(dict(
                    token=sd_tok, sample_token=sample_toks[k],
                    ego_pose_token=sd_tok,
                    calibrated_sensor_token=calib_tok[ch],
                    timestamp=ts_ch, fileformat=fmt, is_key_frame=True,
                    height=height, width=width, filename=fname,
                    prev=sd_toks[k - 1][ch] if k > 0 else '',
                    next=sd_toks[k + 1][ch] if k + 1 < len(ts) else ''))
            for j, i in enumerate(present):
                tr = tracks[i]
                frac = vis_px[j] / full_px[j] if full_px[j] > 0 else 0.0
                pos = tr.frames.index(k)
                tables['sample_annotation'].append(dict(
                    token=ann_tok[(i, k)], sample_token=sample_toks[k],
                    instance_token=tok('instance', s_name, i),
                    visibility_token=_visibility_token(frac),
                    attribute_tokens=[attr_tok[attrs[i]]]
                    if attrs[i] is not None else [],
                    translation=[float(v) for v in tr.center(rel[k])],
                    size=list(tr.wlh), rotation=_yaw_quat(tr.yaw),
                    prev=ann_tok[(i, tr.frames[pos - 1])] if pos > 0 else '',
                    next=ann_tok[(i, tr.frames[pos + 1])]
                    if pos + 1 < len(tr.frames) else '',
                    num_lidar_pts=int(lidar_counts[j]),
                    num_radar_pts=int(rng.integers(1, 9))))
                if tr.cls is not None:
                    class_counts[tr.cls] += 1
                    if split == 'val':
                        val_class_counts[tr.cls] += 1

    # one map per location that has logs (the devkit needs log_tokens and
    # an existing png per map record)
    map_file = None
    for loc in _LOCATIONS:
        logs = [log_tok[n] for n in _SCENES if _SCENE_LOGS[n][0] == loc]
        if not logs:
            continue
        m_tok = tok('map', loc)
        fname = f'maps/{m_tok}.png'
        _save_png(os.path.join(root, fname),
                  np.full((16, 16), 255, dtype=np.uint8))
        map_file = map_file or fname
        tables['map'].append(dict(category='semantic_prior', token=m_tok,
                                  filename=fname, log_tokens=logs))
    _remove_stale(os.path.join(root, 'maps'), r'[0-9a-f]{32}\.png',
                  {os.path.basename(m['filename']) for m in tables['map']})
    for ch in (LIDAR, ) + CAMERAS:
        ext = r'\.pcd\.bin' if ch == LIDAR else r'\.jpg'
        _remove_stale(os.path.join(root, 'samples', ch),
                      r'n0\d\d-[0-9-]+[+-]\d{4}__' + ch + r'__\d+' + ext,
                      keep[ch])
    for t in _TABLES:
        _write_json(os.path.join(table_dir, t + '.json'), tables[t], indent=0)

    stats = dict(
        num_scenes=len(plan),
        num_samples=n_samples['train'] + n_samples['val'],
        num_train_samples=n_samples['train'],
        num_val_samples=n_samples['val'],
        num_instances=len(tables['instance']),
        num_annotations=len(tables['sample_annotation']),
        num_images=len(CAMERAS) * (n_samples['train'] + n_samples['val']),
        class_counts=class_counts, val_class_counts=val_class_counts)
    _write_json(stamp_path, dict(params=params, stats=stats,
                                 map_file=map_file), indent=0)
    return summary(stats, True)
