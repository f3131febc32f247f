"""Tiny, deterministic synthetic datasets in the exact on-disk formats of
COCO (instances) and ADE20K (ADEChallengeData2016).

The content is deliberately easy to learn: each image shows 1-3 solid,
high-contrast shapes of three classes (``square``, ``circle``,
``triangle``), each class with its own colour, on a dark, lightly noisy
background.  Objects never overlap and never touch the image border.

Both generators write a stamp ``<root>/.demo_meta.json`` holding the
generation parameters and a format version; a second call with the same
parameters finds the stamp (and all files) and returns without rewriting
anything.  Output is byte-for-byte deterministic for a given seed.

Layouts
-------
COCO (``make_coco_demo(root)``)::

    root/train2017/000000000001.jpg ...
    root/val2017/000001000001.jpg ...
    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json

ADE20K (``make_ade_demo(root)``)::

    root/ADEChallengeData2016/images/training/ADE_train_00000001.jpg
    root/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg
    root/ADEChallengeData2016/annotations/training/ADE_train_00000001.png
    root/ADEChallengeData2016/annotations/validation/ADE_val_00000001.png

ADE label convention (mmseg's ``ADE20KDataset`` uses
``reduce_zero_label=True``): the png stores 1 for the background (ADE
"wall", class index 0 after reduction) and 2/3/4 for square/circle/triangle
(class indices 1/2/3 after reduction).  Label 0 ("other", ignored) is never
written.

Only numpy, Pillow, pycocotools (imported lazily, used to rasterize the
polygons exactly as COCO tools do) and the standard library are used here,
so this module can be imported without torch / mmcv / mmdet / mmseg.
"""
import json
import math
import os
import re
import warnings

import numpy as np
from PIL import Image

__all__ = ['CLASSES', 'ADE_LABELS', 'FORMAT_VERSION', 'make_coco_demo',
           'make_ade_demo']

#: Class names of the COCO demo (category ids 1, 2, 3).
CLASSES = ('square', 'circle', 'triangle')

#: Raw png labels of the ADE demo (before mmseg's ``reduce_zero_label``).
ADE_LABELS = {'background': 1, 'square': 2, 'circle': 3, 'triangle': 4}

#: Bump when the generated content or layout changes, so stale data is
#: regenerated instead of reused.
FORMAT_VERSION = 1

META_FILE = '.demo_meta.json'
JPEG_QUALITY = 95

# Per-class base colours (RGB); saturated and far apart from each other
# and from the dark background.
_COLORS = {
    'square': (230, 60, 50),
    'circle': (60, 215, 75),
    'triangle': (70, 115, 245),
}
_COLOR_JITTER = 15          # +- per channel
_BG_RANGE = (18, 42)        # background base level per channel
_BG_NOISE_STD = 3.0
_SIZE_RANGE = (0.20, 0.45)  # object side / image short side
_GAP = 4                    # min free pixels between object boxes
_CIRCLE_VERTICES = 32
_MAX_TRIES = 300

_DATASET_TAG = {'coco': 0, 'ade': 1}
_SPLIT_TAG = {'train': 0, 'val': 1}


# --------------------------------------------------------------------------
# scene generation
# --------------------------------------------------------------------------
def _shape_polygon(cls_name, x0, y0, s):
    """Vertices (floats, 2 decimals) of a shape inscribed in the square
    [x0, x0 + s] x [y0, y0 + s] of continuous COCO coordinates, where pixel
    ``k`` spans [k, k + 1); the shape thus covers pixels x0 .. x0 + s - 1."""
    x1, y1 = x0 + s, y0 + s
    if cls_name == 'square':
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif cls_name == 'triangle':
        # upright isosceles triangle filling the box
        pts = [(x0 + s / 2.0, y0), (x1, y1), (x0, y1)]
    elif cls_name == 'circle':
        cx, cy, r = x0 + s / 2.0, y0 + s / 2.0, s / 2.0
        pts = []
        for k in range(_CIRCLE_VERTICES):
            a = 2.0 * math.pi * k / _CIRCLE_VERTICES
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    else:
        raise ValueError(f'unknown shape {cls_name!r}')
    return [(round(float(x), 2), round(float(y), 2)) for x, y in pts]


def _rasterize(polygon, height, width):
    """Pixel mask of ``polygon`` exactly as COCO tools see it.

    The mask is rasterized with pycocotools (``frPyObjects`` + ``decode``),
    the same code that ``COCO.annToMask``, ``COCOeval`` and mmdet's
    ``PolygonMasks`` use, so the pixels painted into the image are exactly
    the ground-truth mask every consumer derives from the polygon.  (PIL's
    ``ImageDraw.polygon`` fills vertices inclusively and would disagree by
    one pixel along the right / bottom edges.)
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:  # pragma: no cover
        raise ImportError('make_coco_demo / make_ade_demo need pycocotools '
                          '(pip install pycocotools)') from e
    flat = [float(v) for xy in polygon for v in xy]
    rles = mask_utils.frPyObjects([flat], height, width)
    with warnings.catch_warnings():
        # pycocotools' decode trips a numpy>=2 copy-keyword deprecation
        warnings.simplefilter('ignore', DeprecationWarning)
        mask = mask_utils.decode(mask_utils.merge(rles))
    return np.asarray(mask).astype(bool)


def _place_objects(rng, n_obj, height, width, forced_classes=None):
    """Pick non-overlapping square boxes (x0, y0, s) and classes."""
    short = min(height, width)
    s_min = max(4, int(round(_SIZE_RANGE[0] * short)))
    s_max = max(s_min, int(round(_SIZE_RANGE[1] * short)))
    margin = max(2, int(round(0.03 * short)))
    boxes = []
    for j in range(n_obj):
        if forced_classes is not None:
            cls_idx = int(forced_classes[j])
        else:
            cls_idx = int(rng.integers(len(CLASSES)))
        placed = None
        for t in range(_MAX_TRIES):
            # shrink the allowed size range as attempts fail so that a
            # crowded image still gets its object
            hi = s_max - (s_max - s_min) * t // _MAX_TRIES
            s = int(rng.integers(s_min, hi + 1))
            if s + 2 * margin > short:
                continue
            x0 = int(rng.integers(margin, width - margin - s + 1))
            y0 = int(rng.integers(margin, height - margin - s + 1))
            ok = True
            for bx, by, bs, _ in boxes:
                if (x0 < bx + bs + _GAP and bx < x0 + s + _GAP
                        and y0 < by + bs + _GAP and by < y0 + s + _GAP):
                    ok = False
                    break
            if ok:
                placed = (x0, y0, s, cls_idx)
                break
        if placed is not None:
            boxes.append(placed)
    return boxes


def _render_scene(rng, height, width, force_all_classes=False):
    """Return (rgb uint8 HxWx3, list of objects).

    Each object is a dict with ``cls`` (index into CLASSES), ``polygon``
    (list of float (x, y)) and ``mask`` (bool HxW, the pixels drawn).
    """
    if force_all_classes:
        n_obj = len(CLASSES)
        forced = rng.permutation(len(CLASSES))
    else:
        n_obj = int(rng.integers(1, 4))
        forced = None
    boxes = _place_objects(rng, n_obj, height, width, forced)

    base = rng.integers(_BG_RANGE[0], _BG_RANGE[1] + 1, size=3)
    noise = rng.normal(0.0, _BG_NOISE_STD, size=(height, width, 3))
    img = np.clip(base[None, None, :] + noise, 0, 255)

    objects = []
    for x0, y0, s, cls_idx in boxes:
        name = CLASSES[cls_idx]
        poly = _shape_polygon(name, x0, y0, s)
        mask = _rasterize(poly, height, width)
        jitter = rng.integers(-_COLOR_JITTER, _COLOR_JITTER + 1, size=3)
        color = np.clip(np.asarray(_COLORS[name]) + jitter, 0, 255)
        img[mask] = color
        objects.append(dict(cls=cls_idx, polygon=poly, mask=mask))
    return np.round(img).astype(np.uint8), objects


def _image_rng(seed, dataset, split, index):
    ss = np.random.SeedSequence(
        [int(seed), _DATASET_TAG[dataset], _SPLIT_TAG[split], int(index)])
    return np.random.default_rng(ss)


# --------------------------------------------------------------------------
# file helpers
# --------------------------------------------------------------------------
def _atomic_write_bytes(path, data):
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def _save_jpg(path, arr):
    tmp = path + '.tmp'
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(
        tmp, format='JPEG', quality=JPEG_QUALITY)
    os.replace(tmp, path)


def _save_png(path, arr):
    tmp = path + '.tmp'
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(
        tmp, format='PNG')
    os.replace(tmp, path)


def _write_json(path, obj, indent=None):
    data = json.dumps(obj, indent=indent, sort_keys=False)
    _atomic_write_bytes(path, data.encode('utf-8'))


def _remove_stale(directory, pattern, keep):
    """Delete files in ``directory`` matching ``pattern`` (our own naming
    scheme) that are not in ``keep``; never touches anything else."""
    if not os.path.isdir(directory):
        return
    regex = re.compile(pattern)
    for name in sorted(os.listdir(directory)):
        if regex.fullmatch(name) and name not in keep:
            os.remove(os.path.join(directory, name))


def _norm_size(img_size):
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    h, w = (int(v) for v in img_size)
    if h < 16 or w < 16:
        raise ValueError(f'img_size too small: {img_size}')
    return h, w


def _check_counts(num_train, num_val):
    if int(num_train) < 1 or int(num_val) < 1:
        raise ValueError('num_train and num_val must be >= 1')
    return int(num_train), int(num_val)


def _params(kind, num_train, num_val, img_size, seed):
    if int(seed) < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    return dict(kind=kind, format_version=FORMAT_VERSION,
                num_train=num_train, num_val=num_val,
                img_size=list(img_size), seed=int(seed))


def _read_stamp(root):
    path = os.path.join(root, META_FILE)
    try:
        with open(path, 'r', encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _up_to_date(root, params, files):
    stamp = _read_stamp(root)
    if not isinstance(stamp, dict) or stamp.get('params') != params:
        return None
    if not all(os.path.isfile(p) for p in files):
        return None
    return stamp


def _invalidate_stamp(root):
    path = os.path.join(root, META_FILE)
    if os.path.exists(path):
        os.remove(path)


# --------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------
_COCO_SPLITS = (('train', 'train2017', 0), ('val', 'val2017', 1000000))


def _coco_file_name(split, i):
    offset = dict((s, o) for s, _, o in _COCO_SPLITS)[split]
    return '%012d.jpg' % (offset + i + 1)


def _mask_bbox(mask):
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    x0, x1, y0, y1 = int(xs[0]), int(xs[-1]), int(ys[0]), int(ys[-1])
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def _coco_paths(root, num_train, num_val):
    counts = dict(train=num_train, val=num_val)
    paths = {}
    for split, dirname, _ in _COCO_SPLITS:
        paths[split + '_dir'] = os.path.join(root, dirname)
        paths[split + '_ann'] = os.path.join(
            root, 'annotations', f'instances_{dirname}.json')
        paths[split + '_images'] = [
            os.path.join(root, dirname, _coco_file_name(split, i))
            for i in range(counts[split])]
    return paths


def make_coco_demo(root, num_train=64, num_val=16, img_size=(128, 128),
                   seed=0, force=False):
    """Write a COCO-instances-format demo dataset under ``root``.

    Args:
        root (str): dataset root (``data_root`` of an mmdet config).
        num_train (int): number of training images.
        num_val (int): number of validation images.
        img_size (tuple[int, int] | int): image (height, width).
        seed (int): random seed; same seed -> identical bytes.
        force (bool): regenerate even if an up-to-date copy exists.

    Returns:
        dict: summary with paths, image / instance counts and class names;
        ``generated`` is False when existing data was reused.
    """
    root = os.path.abspath(os.fspath(root))
    num_train, num_val = _check_counts(num_train, num_val)
    height, width = _norm_size(img_size)
    params = _params('coco', num_train, num_val, (height, width), seed)
    paths = _coco_paths(root, num_train, num_val)
    all_files = (paths['train_images'] + paths['val_images']
                 + [paths['train_ann'], paths['val_ann']])

    def summary(instances, generated):
        return dict(
            kind='coco', root=root,
            train_img_dir=paths['train_dir'], val_img_dir=paths['val_dir'],
            train_ann_file=paths['train_ann'], val_ann_file=paths['val_ann'],
            num_train=num_train, num_val=num_val,
            num_train_instances=instances['train'],
            num_val_instances=instances['val'],
            classes=list(CLASSES), img_size=[height, width], seed=int(seed),
            generated=generated)

    stamp = None if force else _up_to_date(root, params, all_files)
    if stamp is not None:
        return summary(stamp['instances'], False)

    _invalidate_stamp(root)
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    counts = dict(train=num_train, val=num_val)
    instances = {}
    for split, dirname, offset in _COCO_SPLITS:
        img_dir = os.path.join(root, dirname)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        ann_id = offset
        names = set()
        for i in range(counts[split]):
            rng = _image_rng(seed, 'coco', split, i)
            img, objects = _render_scene(
                rng, height, width, force_all_classes=(i == 0))
            image_id = offset + i + 1
            file_name = _coco_file_name(split, i)
            names.add(file_name)
            _save_jpg(os.path.join(img_dir, file_name), img)
            images.append(dict(id=image_id, file_name=file_name,
                               width=width, height=height))
            for obj in objects:
                ann_id += 1
                poly = [v for xy in obj['polygon'] for v in xy]
                annotations.append(dict(
                    id=ann_id, image_id=image_id,
                    category_id=obj['cls'] + 1,
                    segmentation=[poly],
                    area=float(obj['mask'].sum()),
                    bbox=_mask_bbox(obj['mask']),
                    iscrowd=0))
        _remove_stale(img_dir, r'\d{12}\.jpg', names)
        dataset = dict(
            info=dict(description='mmvisbackbones synthetic shapes demo '
                                  f'({split})',
                      version=str(FORMAT_VERSION), year=2017,
                      contributor='mmvisbackbones', date_created=''),
            licenses=[],
            images=images, annotations=annotations, categories=categories)
        _write_json(paths[split + '_ann'], dataset)
        instances[split] = len(annotations)

    _write_json(os.path.join(root, META_FILE),
                dict(params=params, instances=instances), indent=2)
    return summary(instances, True)


# --------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------
_ADE_SPLITS = (('train', 'training', 'ADE_train_%08d'),
               ('val', 'validation', 'ADE_val_%08d'))


def _ade_paths(root, num_train, num_val):
    ade_root = os.path.join(root, 'ADEChallengeData2016')
    counts = dict(train=num_train, val=num_val)
    paths = dict(ade_root=ade_root)
    for split, dirname, fmt in _ADE_SPLITS:
        img_dir = os.path.join(ade_root, 'images', dirname)
        ann_dir = os.path.join(ade_root, 'annotations', dirname)
        paths[split + '_img_dir'] = img_dir
        paths[split + '_ann_dir'] = ann_dir
        stems = [fmt % (i + 1) for i in range(counts[split])]
        paths[split + '_files'] = (
            [os.path.join(img_dir, s + '.jpg') for s in stems]
            + [os.path.join(ann_dir, s + '.png') for s in stems])
    return paths


def make_ade_demo(root, num_train=64, num_val=16, img_size=(128, 128),
                  seed=0, force=False):
    """Write an ADE20K-format (ADEChallengeData2016) demo under ``root``.

    The mmseg ``data_root`` is ``<root>/ADEChallengeData2016``.  Png labels:
    1 = background (class 0 after ``reduce_zero_label``), 2/3/4 =
    square/circle/triangle (classes 1/2/3); 0 is never used.

    Returns:
        dict: summary with paths, counts and the label convention;
        ``generated`` is False when existing data was reused.
    """
    root = os.path.abspath(os.fspath(root))
    num_train, num_val = _check_counts(num_train, num_val)
    height, width = _norm_size(img_size)
    params = _params('ade', num_train, num_val, (height, width), seed)
    paths = _ade_paths(root, num_train, num_val)
    all_files = paths['train_files'] + paths['val_files']

    def summary(generated):
        return dict(
            kind='ade', root=root, data_root=paths['ade_root'],
            train_img_dir=paths['train_img_dir'],
            train_ann_dir=paths['train_ann_dir'],
            val_img_dir=paths['val_img_dir'],
            val_ann_dir=paths['val_ann_dir'],
            num_train=num_train, num_val=num_val,
            label_map=dict(ADE_LABELS), reduce_zero_label=True,
            classes=list(CLASSES), img_size=[height, width], seed=int(seed),
            generated=generated)

    if not force and _up_to_date(root, params, all_files) is not None:
        return summary(False)

    _invalidate_stamp(root)
    counts = dict(train=num_train, val=num_val)
    for split, _, fmt in _ADE_SPLITS:
        img_dir = paths[split + '_img_dir']
        ann_dir = paths[split + '_ann_dir']
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        stems = set()
        for i in range(counts[split]):
            rng = _image_rng(seed, 'ade', split, i)
            img, objects = _render_scene(
                rng, height, width, force_all_classes=(i == 0))
            label = np.full((height, width), ADE_LABELS['background'],
                            dtype=np.uint8)
            for obj in objects:
                label[obj['mask']] = ADE_LABELS[CLASSES[obj['cls']]]
            stem = fmt % (i + 1)
            stems.add(stem)
            _save_jpg(os.path.join(img_dir, stem + '.jpg'), img)
            _save_png(os.path.join(ann_dir, stem + '.png'), label)
        prefix = fmt.split('%')[0]
        _remove_stale(img_dir, re.escape(prefix) + r'\d{8}\.jpg',
                      {s + '.jpg' for s in stems})
        _remove_stale(ann_dir, re.escape(prefix) + r'\d{8}\.png',
                      {s + '.png' for s in stems})

    _write_json(os.path.join(root, META_FILE), dict(params=params), indent=2)
    return summary(True)
