"""BEVFormer (Li et al., ECCV 2022) on mmengine 0.10 / mmcv 2.1 / mmdet 3.3 /
mmdet3d 1.4, fed by any backbone of this package.

Importing this subpackage registers, in mmdet3d's registries: the detector
``BEVFormer``, its ``BEVFormerDataPreprocessor`` and ``BEVFormerHead``, the
``NMSFreeCoder``, ``HungarianAssigner3D`` and ``BBox3DL1Cost``, the dataset
``BEVFormerNuScenesDataset`` and the transform ``MultiViewImageScale``. Use it
from a config with ``custom_imports=dict(imports=['mmvisbackbones',
'mmvisbackbones.detectors.bevformer'])``.
"""
from .coder import BBox3DL1Cost, HungarianAssigner3D, NMSFreeCoder
from .detector import BEVFormer, BEVFormerDataPreprocessor, GridMask
from .head import BEVFormerHead
from .sampler import ContiguousSampler
from .dataset import BEVFormerNuScenesDataset
from .transforms import MultiViewImageScale
