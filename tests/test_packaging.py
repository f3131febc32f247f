"""What an installed package (no clone) carries and serves: the wheel's
``mmvisbackbones/.mim`` (configs, tools, model index), ``mim train`` /
``mim test`` and ``'mmvisbackbones::...'`` configs from a fresh venv that
holds only the wheel and reuses this venv's stack; the model index is
current; the setup script leaves pip's dependency check clean but for what it
documents."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys
import zipfile
from fnmatch import fnmatchcase

import pytest

from mm_helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'tools', 'dev'))
import model_index  # noqa: E402

DEMO = 'mask-rcnn_vmamba-demo_fpn_coco-demo.py'


def sh(cmd, cwd, env=None, timeout=900):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f'{cmd} failed ({r.returncode}):\n{out[-5000:]}'
    return out


def test_model_index_is_current():
    assert model_index.differences() == [], 'run python tools/dev/model_index.py --write'


def test_model_index_lists_every_config_once():
    data = model_index.generate()
    listed = [m['Config'] for rel, d in data.items() if rel != model_index.INDEX
              for m in d['Models']]
    on_disk = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '*',
                                                                          '*.py'))
                     if '/_base_/' not in p)
    assert sorted(listed) == on_disk and len(set(listed)) == len(listed)
    assert data[model_index.INDEX]['Import'] == sorted(
        rel for rel in data if rel != model_index.INDEX)
    by_name = {m['Name']: m for d in data.values() for m in d.get('Models', [])}
    vm = by_name['upernet_vmamba-t_4xb4-160k_ade20k-512x512']['Metadata']
    assert (vm['Batch Size'], vm['Training Data']) == (16, 'ADE20K')
    assert by_name['mask-rcnn_swin-t_fpn_1x_coco']['Metadata']['Batch Size'] == 16
    assert 'Batch Size' not in by_name[DEMO[:-3]]['Metadata']


def test_model_index_names_an_unknown_config_folder(tmp_path, monkeypatch):
    (tmp_path / 'configs' / 'newfam').mkdir(parents=True)
    monkeypatch.setattr(model_index, 'ROOT', str(tmp_path))
    with pytest.raises(ValueError, match='configs/newfam: add it to COLLECTIONS'):
        model_index.generate()


def test_config_package_registered_with_mmengine():
    import mmvisbackbones  # noqa: F401
    from mmengine.config.utils import MODULE2PACKAGE, _get_package_and_cfg_path
    assert MODULE2PACKAGE['mmvisbackbones'] == 'mmvisbackbones'
    assert _get_package_and_cfg_path('mmvisbackbones::vmamba/x.py') == (
        'mmvisbackbones', 'vmamba/x.py')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """The wheel `pip wheel .` builds from this tree (the stack's setuptools, no
    index: nothing is downloaded)."""
    out = tmp_path_factory.mktemp('wheel')
    sh([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
        '--no-index', '-q', '-w', str(out), ROOT], cwd=str(out))
    whl, = glob.glob(str(out / 'mmvisbackbones-*.whl'))
    return whl


def test_wheel_carries_configs_tools_and_model_index(wheel):
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
    mim = 'mmvisbackbones/.mim/'
    configs = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**',
                                                                          '*.*'),
                                                             recursive=True))
    assert configs and all(mim + c in infos for c in configs)
    for tool in ('train.py', 'test.py', 'make_demo_data.py', 'analysis/erf.py'):
        assert mim + 'tools/' + tool in infos, tool
    assert mim + 'model-index.yml' in infos
    assert not [n for n in infos if '__pycache__' in n or n.endswith('.pyc')]
    # real files, not links into the source tree (mode bits of a symlink: 0o120000)
    assert not [n for n, i in infos.items() if (i.external_attr >> 16) & 0o170000 == 0o120000]


@pytest.fixture(scope='module')
def fresh_venv(wheel, tmp_path_factory):
    """A new venv with only the wheel installed; this venv's site-packages are
    appended to its path by a plain-path .pth (their own .pth files, e.g. the
    editable install of this clone, are not processed), so torch, mmcv, mmdet
    and mim come from the stack and mmvisbackbones from the wheel."""
    root = tmp_path_factory.mktemp('venv')
    venv = root / 'v'
    sh([sys.executable, '-m', 'venv', str(venv)], cwd=str(root))
    py = str(venv / 'bin' / 'python')
    sh([py, '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', wheel], cwd=str(root))
    # this venv's site-packages and, for a venv made with --system-site-packages
    # (a GPU machine's own torch), the base interpreter's
    sites = [p for p in sys.path if osp.basename(p) in ('site-packages', 'dist-packages')]
    assert sites, sys.path
    new_site = sh([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                  cwd=str(root)).strip()
    with open(osp.join(new_site, 'zz_reuse_stack.pth'), 'w') as f:
        f.write(''.join(p + '\n' for p in sites))
    work = root / 'work'  # not the clone: nothing may come from the source tree
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env['PATH'] = str(venv / 'bin') + os.pathsep + env.get('PATH', '')
    return py, new_site, str(work), env


def test_installed_package_is_the_wheel(fresh_venv):
    py, new_site, work, env = fresh_venv
    out = sh([py, '-c', 'import mmvisbackbones, mim; print(mmvisbackbones.__file__)'],
             cwd=work, env=env)
    assert out.strip() == osp.join(new_site, 'mmvisbackbones', '__init__.py')


def test_installed_configs_load_by_package_name(fresh_venv):
    py, new_site, work, env = fresh_venv
    with open(osp.join(work, 'my_cfg.py'), 'w') as f:
        f.write("_base_ = 'mmvisbackbones::vmamba/mask-rcnn_vmamba-t_fpn_1x_coco.py'\n"
                "model = dict(backbone=dict(arch='small'))\n")
    out = sh([py, '-c', 'import mmvisbackbones\nfrom mmengine import Config\n'
              "c = Config.fromfile('my_cfg.py')\n"
              'print(c.model.type, c.model.backbone.type, c.model.backbone.arch, '
              'c.optim_wrapper.optimizer.type, c.auto_scale_lr.base_batch_size)'],
             cwd=work, env=env)
    assert out.split()[-5:] == ['MaskRCNN', 'VMamba', 'small', 'AdamW', '16']


def test_mim_trains_and_tests_from_the_installed_configs(fresh_venv):
    py, new_site, work, env = fresh_venv
    mim_dir = osp.join(new_site, 'mmvisbackbones', '.mim')
    sh([py, osp.join(mim_dir, 'tools', 'make_demo_data.py'), '--out', 'data/demo', '--coco',
        '--num-train', '2', '--num-val', '2'], cwd=work, env=env)
    opts = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=2']
    log = sh([py, '-m', 'mim', 'train', 'mmvisbackbones', DEMO, '--work-dir', 'w'] + opts,
             cwd=work, env=env)
    # mim found the config inside the installed package, not in a clone
    assert re.search(r'will use \S*' + re.escape(osp.join(mim_dir, 'configs', 'demo', DEMO)),
                     log.replace('\n', '')), log[-3000:]
    assert 'Saving checkpoint at 1 epochs' in log and 'coco/bbox_mAP' in log, log[-3000:]
    ckpt = osp.join(work, 'w', 'epoch_1.pth')
    assert osp.isfile(ckpt)
    log = sh([py, '-m', 'mim', 'test', 'mmvisbackbones', DEMO, '--checkpoint', ckpt,
              '--work-dir', 'wt'], cwd=work, env=env)
    assert 'coco/segm_mAP' in log, log[-3000:]


SETUP = osp.join(ROOT, 'tools', 'setup_env.sh')


def documented_pip_check_lines():
    """The lines of `pip check` that tools/setup_env.sh documents as expected
    (shell-style patterns: ``*`` stands for an installed version)."""
    text = open(SETUP).read()
    block = re.search(r'# pip check: expected lines start\n(.*?)# pip check: expected lines end',
                      text, re.S)
    assert block, 'tools/setup_env.sh lacks the documented pip check block'
    return [ln[1:].strip() for ln in block.group(1).splitlines() if ln.strip('# ')]


def test_pip_check_reports_only_what_setup_documents():
    r = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln != 'No broken requirements found.']
    documented = documented_pip_check_lines()
    undocumented = [ln for ln in lines if not any(fnmatchcase(ln, d) for d in documented)]
    assert not undocumented, undocumented
    import setuptools
    major = int(setuptools.__version__.split('.')[0])
    assert 77 <= major < 81, f'setuptools {setuptools.__version__} left behind by the mmcv build'
