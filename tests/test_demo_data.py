"""Tests of the synthetic COCO / ADE20K demo data generator."""
import contextlib
import io
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmvisbackbones.datasets import (CLASSES, make_ade_demo,  # noqa: E402
                                     make_coco_demo)
from mmvisbackbones.datasets import demo_data  # noqa: E402

# pycocotools' mask decoding trips a harmless numpy>=2 deprecation warning
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')

NUM_TRAIN, NUM_VAL = 4, 2
SIZE = (128, 128)


def _quiet_coco(ann_file):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(ann_file)


def _all_files(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = osp.join(dirpath, f)
            with open(p, 'rb') as fh:
                out[osp.relpath(p, root)] = fh.read()
    return out


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo') / 'coco')
    summary = make_coco_demo(root, num_train=NUM_TRAIN, num_val=NUM_VAL,
                             img_size=SIZE, seed=0)
    assert summary['generated']
    return root


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo') / 'ade')
    summary = make_ade_demo(root, num_train=NUM_TRAIN, num_val=NUM_VAL,
                            img_size=SIZE, seed=0)
    assert summary['generated']
    assert summary['data_root'] == osp.join(root, 'ADEChallengeData2016')
    return summary['data_root']


# --------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------
def test_module_does_not_import_frameworks():
    code = ('import importlib.util, sys\n'
            f'spec = importlib.util.spec_from_file_location("dd", '
            f'{demo_data.__file__!r})\n'
            'm = importlib.util.module_from_spec(spec)\n'
            'spec.loader.exec_module(m)\n'
            'bad = [k for k in ("torch", "mmcv", "mmdet", "mmseg", '
            '"mmengine") if k in sys.modules]\n'
            'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('split,num', [('train', NUM_TRAIN),
                                       ('val', NUM_VAL)])
def test_coco_annotations_consistent(coco_root, split, num):
    coco = _quiet_coco(
        osp.join(coco_root, 'annotations', f'instances_{split}2017.json'))
    cats = coco.loadCats(coco.getCatIds())
    assert [c['id'] for c in cats] == [1, 2, 3]
    assert tuple(c['name'] for c in cats) == CLASSES
    assert len(coco.getImgIds()) == num
    seen_cats = set()
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        path = osp.join(coco_root, f'{split}2017', info['file_name'])
        with Image.open(path) as im:
            assert im.format == 'JPEG' and im.mode == 'RGB'
            assert im.size == (info['width'], info['height'])
            assert (info['height'], info['width']) == SIZE
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 3
        masks = []
        for ann in anns:
            seen_cats.add(ann['category_id'])
            assert ann['iscrowd'] == 0
            assert isinstance(ann['segmentation'], list)
            assert len(ann['segmentation'][0]) >= 6
            assert ann['area'] > 0
            m = coco.annToMask(ann).astype(bool)
            assert m.shape == SIZE
            ys, xs = np.nonzero(m)
            bbox = [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1]
            assert np.abs(np.asarray(bbox) - ann['bbox']).max() <= 1
            assert abs(m.sum() - ann['area']) <= 0.02 * ann['area']
            # not touching the border, size within ~20%..45% of the side
            assert xs.min() > 0 and ys.min() > 0
            assert xs.max() < SIZE[1] - 1 and ys.max() < SIZE[0] - 1
            side = max(ann['bbox'][2], ann['bbox'][3]) / min(SIZE)
            assert 0.18 <= side <= 0.47
            masks.append(m)
        # objects do not overlap
        assert (np.sum(masks, axis=0) <= 1).all()
    assert seen_cats == {1, 2, 3}


def test_coco_objects_drawn_in_image(coco_root):
    coco = _quiet_coco(
        osp.join(coco_root, 'annotations', 'instances_val2017.json'))
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        img = np.asarray(Image.open(
            osp.join(coco_root, 'val2017', info['file_name'])), np.float32)
        fg = np.zeros(SIZE, bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            fg |= coco.annToMask(ann).astype(bool)
        # high contrast: shapes are much brighter than the dark background
        assert img[fg].max(axis=1).mean() > img[~fg].max(axis=1).mean() + 100


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_self_eval_is_perfect(coco_root, split):
    coco = _quiet_coco(
        osp.join(coco_root, 'annotations', f'instances_{split}2017.json'))
    anns = coco.loadAnns(coco.getAnnIds())
    for iou_type in ('bbox', 'segm'):
        dets = []
        for ann in anns:
            det = dict(image_id=ann['image_id'],
                       category_id=ann['category_id'], score=1.0)
            if iou_type == 'bbox':
                det['bbox'] = list(ann['bbox'])
            else:
                det['segmentation'] = coco.annToRLE(ann)
            dets.append(det)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco.loadRes(dets)
            ev = COCOeval(coco, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), iou_type  # AP@[.5:.95]
        assert ev.stats[1] == pytest.approx(1.0), iou_type  # AP@.5


def test_mmdet_coco_dataset(coco_root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(
        data_root=coco_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=CLASSES),
        pipeline=[],
        test_mode=True)
    assert len(ds) == NUM_VAL
    assert tuple(ds.metainfo['classes']) == CLASSES
    n_inst = 0
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert osp.isfile(info['img_path'])
        assert (info['height'], info['width']) == SIZE
        assert len(info['instances']) >= 1
        for inst in info['instances']:
            assert inst['ignore_flag'] == 0
            assert 0 <= inst['bbox_label'] < len(CLASSES)
            x1, y1, x2, y2 = inst['bbox']
            assert x2 > x1 and y2 > y1
            assert isinstance(inst['mask'], list) and len(inst['mask'][0]) >= 6
            n_inst += 1
    assert n_inst >= 3


# --------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------
def test_ade_layout_and_labels(ade_root):
    labels_seen = set()
    for split, prefix, num in (('training', 'ADE_train_', NUM_TRAIN),
                               ('validation', 'ADE_val_', NUM_VAL)):
        imgs = sorted(os.listdir(osp.join(ade_root, 'images', split)))
        anns = sorted(os.listdir(osp.join(ade_root, 'annotations', split)))
        assert len(imgs) == len(anns) == num
        assert [osp.splitext(f)[0] for f in imgs] == \
            [osp.splitext(f)[0] for f in anns]
        assert all(f.startswith(prefix) and f.endswith('.jpg') for f in imgs)
        split_labels = set()
        for img_f, ann_f in zip(imgs, anns):
            with Image.open(osp.join(ade_root, 'images', split, img_f)) as im:
                assert im.mode == 'RGB' and im.size == SIZE[::-1]
            with Image.open(
                    osp.join(ade_root, 'annotations', split, ann_f)) as lab:
                assert lab.format == 'PNG' and lab.mode == 'L'
                arr = np.asarray(lab)
            assert arr.shape == SIZE
            values = set(np.unique(arr).tolist())
            assert values <= {1, 2, 3, 4}
            assert 1 in values  # background, class 0 after reduction
            split_labels |= values
        # every shape label appears in every split
        assert split_labels == {1, 2, 3, 4}
        labels_seen |= split_labels
    assert demo_data.ADE_LABELS == dict(background=1, square=2, circle=3,
                                        triangle=4)


def test_mmseg_ade_dataset(ade_root):
    from mmseg.datasets import ADE20KDataset
    ds = ADE20KDataset(
        data_root=ade_root,
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        pipeline=[])
    assert len(ds) == NUM_VAL
    assert len(ds.metainfo['classes']) == 150
    assert ds.reduce_zero_label
    info = ds.get_data_info(0)
    assert osp.isfile(info['img_path']) and osp.isfile(info['seg_map_path'])
    assert osp.splitext(osp.basename(info['img_path']))[0] == \
        osp.splitext(osp.basename(info['seg_map_path']))[0]
    arr = np.asarray(Image.open(info['seg_map_path']))
    assert set(np.unique(arr).tolist()) <= {1, 2, 3, 4}
    # labels after mmseg's reduce_zero_label: 0..3, no ignore pixels
    from mmseg.datasets.transforms import LoadAnnotations
    results = LoadAnnotations()(
        dict(seg_map_path=info['seg_map_path'], reduce_zero_label=True,
             seg_fields=[]))
    reduced = set(np.unique(results['gt_seg_map']).tolist())
    assert reduced <= {0, 1, 2, 3} and 0 in reduced


# --------------------------------------------------------------------------
# determinism / idempotence / CLI
# --------------------------------------------------------------------------
@pytest.mark.parametrize('fn', [make_coco_demo, make_ade_demo])
def test_deterministic(tmp_path, fn):
    kw = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, img_size=SIZE, seed=3)
    fn(str(tmp_path / 'a'), **kw)
    fn(str(tmp_path / 'b'), **kw)
    a, b = _all_files(str(tmp_path / 'a')), _all_files(str(tmp_path / 'b'))
    assert sorted(a) == sorted(b)
    assert a == b
    fn(str(tmp_path / 'c'), **dict(kw, seed=4))
    c = _all_files(str(tmp_path / 'c'))
    assert sorted(c) == sorted(a)
    assert any(a[k] != c[k] for k in a if not k.startswith('.demo_meta'))


def test_coco_json_identical_across_runs(tmp_path):
    kw = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, img_size=SIZE, seed=0)
    s1 = make_coco_demo(str(tmp_path / 'a'), **kw)
    s2 = make_coco_demo(str(tmp_path / 'b'), **kw)
    with open(s1['val_ann_file']) as f1, open(s2['val_ann_file']) as f2:
        assert json.load(f1) == json.load(f2)


@pytest.mark.parametrize('fn', [make_coco_demo, make_ade_demo])
def test_idempotent_stamp(tmp_path, fn):
    root = str(tmp_path / 'd')
    kw = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, img_size=SIZE, seed=0)
    assert fn(root, **kw)['generated']
    stamp_path = osp.join(root, '.demo_meta.json')
    with open(stamp_path) as f:
        stamp = json.load(f)
    assert stamp['params']['format_version'] == demo_data.FORMAT_VERSION
    assert stamp['params']['seed'] == 0
    assert stamp['params']['num_train'] == NUM_TRAIN
    files = _all_files(root)
    mtimes = {k: os.stat(osp.join(root, k)).st_mtime_ns for k in files}

    # same parameters: nothing is rewritten
    assert not fn(root, **kw)['generated']
    assert {k: os.stat(osp.join(root, k)).st_mtime_ns
            for k in files} == mtimes

    # force: regenerated, same bytes
    assert fn(root, force=True, **kw)['generated']
    assert _all_files(root) == files

    # a missing file triggers regeneration
    victim = sorted(k for k in files if k.endswith('.jpg'))[0]
    os.remove(osp.join(root, victim))
    assert fn(root, **kw)['generated']
    assert _all_files(root) == files

    # a corrupt stamp triggers regeneration
    with open(stamp_path, 'w') as f:
        f.write('{not json')
    assert fn(root, **kw)['generated']
    assert _all_files(root) == files

    # different parameters: regenerated, stale files of ours removed
    s = fn(root, **dict(kw, num_train=2, num_val=1))
    assert s['generated'] and s['num_train'] == 2 and s['num_val'] == 1
    n_img = sum(k.endswith('.jpg') for k in _all_files(root))
    assert n_img == 3
    with open(stamp_path) as f:
        assert json.load(f)['params']['num_train'] == 2


def test_cli(tmp_path):
    out = str(tmp_path / 'demo')
    cmd = [sys.executable, osp.join('tools', 'make_demo_data.py'),
           '--out', out, '--num-train', '2', '--num-val', '1',
           '--size', '96', '112', '--seed', '1']
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True,
                         capture_output=True, text=True)
    assert 'coco' in res.stdout and 'ade' in res.stdout
    coco = _quiet_coco(osp.join(out, 'coco', 'annotations',
                                'instances_train2017.json'))
    img = coco.loadImgs(coco.getImgIds())[0]
    assert (img['height'], img['width']) == (96, 112)
    ade_img_dir = osp.join(out, 'ade', 'ADEChallengeData2016', 'images',
                           'validation')
    assert len(os.listdir(ade_img_dir)) == 1
    # second run: kept; --coco only touches coco
    res = subprocess.run(cmd + ['--coco'], cwd=REPO_ROOT, env=env,
                         check=True, capture_output=True, text=True)
    assert 'up to date' in res.stdout and '[ade]' not in res.stdout
