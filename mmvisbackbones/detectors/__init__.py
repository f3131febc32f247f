"""Detectors OpenMMLab lacks, fed by the backbones of this package.

Each subpackage needs the OpenMMLab library it extends and is imported on
its own (``import mmvisbackbones`` never imports them):

* ``mmvisbackbones.detectors.bevformer``: BEVFormer on mmdet3d 1.x.
"""
