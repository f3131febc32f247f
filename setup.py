import os.path as osp

from setuptools import find_packages, setup


def read_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'mmvisbackbones', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


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
    license='Apache-2.0',
    zip_safe=False,
)
