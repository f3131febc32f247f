"""Deployment helpers: ONNX export of the backbones, checked with onnxruntime.

Not imported by ``import mmvisbackbones``: the package itself needs only
torch and mmengine.  ``onnx`` and ``onnxruntime`` are imported when an
export or a check runs (``pip install onnx onnxruntime``)::

    from mmvisbackbones.deploy import export_backbone
    report = export_backbone(net, 'net.onnx', input_shape=(1, 3, 224, 224), dynamic=True)
    print(report.table())
"""
from .onnx import (DEFAULT_ATOL, DEFAULT_OPSET, DEFAULT_RTOL, DynamicShapeError, ExportReport,
                   OnnxExportError, OnnxVerificationError, OutputCheck, ShapeCheck,
                   default_check_shape, export_backbone, verify_onnx)

__all__ = [
    'export_backbone', 'verify_onnx', 'default_check_shape', 'ExportReport', 'ShapeCheck',
    'OutputCheck', 'OnnxExportError', 'OnnxVerificationError', 'DynamicShapeError',
    'DEFAULT_OPSET', 'DEFAULT_RTOL', 'DEFAULT_ATOL'
]
