import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
# What OpenMMLab packages carry in <package>/.mim/: the configs, the tools and
# the model index, so that an installed package (no clone) serves
# `mim train mmvisbackbones CONFIG`, `mim test ...` and configs loaded as
# 'mmvisbackbones::<family>/<config>.py'.  build_py below copies them into the
# build (`pip install .`, `pip wheel .`); the source tree is left alone.  An
# editable install has no .mim: from a clone, name configs by their paths.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version():
    ns = {}
    with open(osp.join(ROOT, 'mmvisbackbones', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


class BuildPyWithMim(build_py):
    """build_py, then copy ``MIM_FILES`` into ``<build_lib>/mmvisbackbones/.mim``
    (real files: a wheel must not hold links into the source tree)."""

    def run(self):
        super().run()
        dst_root = osp.join(self.build_lib, 'mmvisbackbones', '.mim')
        ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
        for name in MIM_FILES:
            src, dst = osp.join(ROOT, name), osp.join(dst_root, name)
            if not osp.exists(src):
                raise FileNotFoundError(f'{src} is missing: the wheel must carry it in .mim/')
            if osp.islink(dst) or osp.isfile(dst):
                os.remove(dst)
            elif osp.isdir(dst):
                shutil.rmtree(dst)
            if osp.isdir(src):
                shutil.copytree(src, dst, ignore=ignore)
            else:
                os.makedirs(dst_root, exist_ok=True)
                shutil.copyfile(src, dst)


setup(
    name='mmvisbackbones',
    version=read_version(),
    description='Modern vision backbones (VMamba, Vim, Vision-RWKV, MLLA, Swin, PVTv2, '
    'BiFormer) for OpenMMLab detection and segmentation',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read()
    if osp.exists(osp.join(osp.dirname(__file__), 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmvisbackbones', 'mmvisbackbones.*']),
    python_requires='>=3.8',
    # torch is deliberately not pinned here: pip must never resolve a bare
    # `torch` on its own (it would pull several GB of CUDA packages on a CPU
    # box).  Install the torch you want first (see tools/setup_env.sh).
    install_requires=['mmengine>=0.10,<1.0', 'numpy', 'pillow'],
    extras_require={
        'mm': [
            'mmcv>=2.0.0rc4,<2.2.0',
            'mmdet>=3.0,<3.4',
            'mmsegmentation>=1.0,<1.3',
            'pycocotools',
            'ftfy',
            'regex',
        ],
        'triton': ['triton'],
        'onnx': ['onnx', 'onnxruntime'],  # mmvisbackbones.deploy, tools/deploy/export_onnx.py
        'tests': ['pytest', 'onnx', 'onnxruntime'],
    },
    cmdclass={'build_py': BuildPyWithMim},
    license='Apache-2.0',
    zip_safe=False,
)
