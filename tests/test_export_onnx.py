"""ONNX export of every backbone (mmvisbackbones.deploy, tools/deploy/export_onnx.py),
checked against PyTorch with onnxruntime: static and dynamic shapes, the
errors a wrong graph gives, and the CLI."""
import importlib.util
import math
import os.path as osp
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

import mmvisbackbones
from mmvisbackbones.deploy import (DEFAULT_ATOL, DEFAULT_RTOL, DynamicShapeError,
                                   OnnxVerificationError, default_check_shape,
                                   export_backbone, verify_onnx)
from zoo import ZOO

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'deploy', 'export_onnx.py')
FAMILIES = sorted(mmvisbackbones.BACKBONES)
SHAPE = (1, 3, 64, 64)
# another batch, odd and non-square; for the plain backbones (patch 16) 13x16
# = 208 tokens against 16 at SHAPE: 13 traced WKV / scan chunks of 16 against
# one, with a ragged last one, so neither the chunk loops nor the carry
# rounds may freeze at the export length
CHECK = (2, 3, 197, 251)

def test_zoo_covers_registry():
    assert sorted(ZOO) == FAMILIES


def build(name):
    torch.manual_seed(0)
    return mmvisbackbones.BACKBONES[name](**ZOO[name]['kwargs']).eval()


def run_export(name, path, **kw):
    model = build(name)
    return model, export_backbone(model, path, SHAPE, **kw)


def graph_dims(path):
    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return ([(i.name, dims(i)) for i in m.graph.input],
            [(o.name, dims(o)) for o in m.graph.output])


def expected_shapes(model, shape):
    n, _, h, w = shape
    return [(n, c, math.ceil(h / s), math.ceil(w / s))
            for c, s in zip(model.out_channels, model.out_strides)]


def check_report(report, model, shapes):
    assert report.ok
    assert [c.input_shape for c in report.checks] == [tuple(s) for s in shapes]
    names = [f'out{i}' for i in range(len(model.out_indices))]
    assert report.output_names == names
    for c, shape in zip(report.checks, shapes):
        assert [o.name for o in c.outputs] == names
        assert [o.shape for o in c.outputs] == expected_shapes(model, shape)
        for o in c.outputs:
            assert o.max_abs_err <= DEFAULT_ATOL + DEFAULT_RTOL * o.ref_max_abs
            assert o.ref_max_abs > 0.1  # real feature maps, not zeros
    assert report.max_rel_err < DEFAULT_RTOL


@pytest.mark.parametrize('name', FAMILIES)
def test_export_static(name, tmp_path):
    path = tmp_path / f'{name}.onnx'
    model, report = run_export(name, path)
    check_report(report, model, [SHAPE])
    assert not report.dynamic
    inputs, outputs = graph_dims(path)
    assert inputs == [('input', list(SHAPE))]
    assert [(n, tuple(d)) for n, d in outputs] == list(zip(report.output_names,
                                                          expected_shapes(model, SHAPE)))


@pytest.mark.parametrize('name', FAMILIES)
def test_export_dynamic(name, tmp_path):
    path = tmp_path / f'{name}.onnx'
    model, report = run_export(name, path, dynamic=True, second_shape=CHECK)
    check_report(report, model, [SHAPE, CHECK])
    assert report.dynamic and report.fallback_reason is None
    inputs, outputs = graph_dims(path)
    assert inputs == [('input', ['batch', 3, 'height', 'width'])]
    for i, (n, d) in enumerate(outputs):
        assert (n, d) == (f'out{i}', ['batch', model.out_channels[i], f'height{i}', f'width{i}'])


def test_swin_dynamic_traced_at_window_multiple(tmp_path):
    """Traced at 224 (every stage a multiple of the 7x7 window, so eager code
    needs no padding crop) Swin's graph must also hold at sizes that do."""
    model = build('Swin')
    report = export_backbone(model, tmp_path / 'swin.onnx', (1, 3, 224, 224), dynamic=True,
                             second_shape=(1, 3, 97, 161))
    check_report(report, model, [(1, 3, 224, 224), (1, 3, 97, 161)])


def test_default_check_shape():
    assert default_check_shape((1, 3, 224, 224)) == (2, 3, 197, 281)
    assert default_check_shape((1, 3, 64, 64)) == (2, 3, 57, 81)
    assert default_check_shape((2, 3, 32, 32)) == (3, 3, 33, 41)


# ------------------------------------------------------ failures are errors
@pytest.fixture(scope='module')
def pvt_export(tmp_path_factory):
    path = tmp_path_factory.mktemp('onnx') / 'pvtv2.onnx'
    model = build('PVTv2')
    report = export_backbone(model, path, SHAPE)
    assert report.ok
    return model, path


def test_model_changed_after_export_fails(pvt_export):
    model, path = pvt_export
    verify_onnx(path, model, [SHAPE])  # passes as exported
    with torch.no_grad():
        model.stages[3].norm.bias.add_(0.5)  # the last stage's output norm: out3 only
    try:
        with pytest.raises(OnnxVerificationError, match=r"output 'out3' \(shape 1x64x2x2\) at "
                           r'input shape 1x3x64x64: max \|onnx - torch\| = 5\.0+e-01') as exc:
            verify_onnx(path, model, [SHAPE])
        assert [o.ok for o in exc.value.report.checks[0].outputs] == [True, True, True, False]
        res = verify_onnx(path, model, [SHAPE], raise_on_failure=False)
        assert [o.ok for o in res[0].outputs] == [True, True, True, False]
        assert res[0].outputs[3].max_abs_err == pytest.approx(0.5, rel=1e-5)
    finally:
        with torch.no_grad():
            model.stages[3].norm.bias.sub_(0.5)


def test_tampered_onnx_file_fails(pvt_export, tmp_path):
    model, path = pvt_export
    m = onnx.load(str(path))
    g = np.random.default_rng(0)
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            w = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(
                (w + 0.05 * g.standard_normal(w.shape)).astype(np.float32), init.name))
    bad = tmp_path / 'tampered.onnx'
    onnx.save(m, str(bad))
    with pytest.raises(OnnxVerificationError, match=r"output 'out0' .* at input shape 1x3x64x64"):
        verify_onnx(bad, model, [SHAPE])


def test_unloadable_file_is_an_error(pvt_export, tmp_path):
    model, _ = pvt_export
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'not an onnx graph')
    with pytest.raises(OnnxVerificationError, match='onnxruntime cannot load'):
        verify_onnx(bad, model, [SHAPE])


class FrozenWidth(nn.Module):
    """Halves W by a Python int: traced, the width is a constant."""

    def forward(self, x):
        half = int(x.shape[-1]) // 2
        return (x[..., :half] * 2.0, x.mean(dim=1, keepdim=True))


def test_frozen_size_is_detected(tmp_path):
    with pytest.raises(DynamicShapeError, match=r"(?s)FrozenWidth does not export with dynamic "
                       r"shapes.*output 'out0' at input shape 2x3x197x251: onnx shape "
                       r'\(2, 3, 197, 32\) != torch shape \(2, 3, 197, 125\).*'
                       r'test_export_onnx\.py:\d+ \(forward\)') as exc:
        export_backbone(FrozenWidth(), tmp_path / 'f.onnx', SHAPE, dynamic=True,
                        second_shape=CHECK)
    rep = exc.value.report
    assert rep.checks[0].ok and not rep.checks[1].ok
    assert rep.checks[1].outputs[1].ok  # the mean over channels does follow the size


def test_static_fallback_only_when_asked(tmp_path):
    path = tmp_path / 'f.onnx'
    with pytest.warns(UserWarning, match='dynamic ONNX export failed, writing a static graph'):
        report = export_backbone(FrozenWidth(), path, SHAPE, dynamic=True, second_shape=CHECK,
                                 allow_static_fallback=True)
    assert not report.dynamic and report.ok
    assert 'does not export with dynamic shapes' in report.fallback_reason
    assert [c.input_shape for c in report.checks] == [SHAPE]
    assert graph_dims(path)[0] == [('input', list(SHAPE))]


def test_missing_onnxruntime_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails
    with pytest.raises(ImportError, match='pip install onnx onnxruntime'):
        export_backbone(FrozenWidth(), tmp_path / 'f.onnx', SHAPE)


def test_exporter_warnings_do_not_leak(tmp_path):
    model = build('PVTv2')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        report = export_backbone(model, tmp_path / 'p.onnx', SHAPE)
    assert report.ok
    leaked = [f'{w.category.__name__}: {w.message}' for w in caught
              if 'onnx' in str(w.message).lower() or w.category.__name__ == 'TracerWarning']
    assert not leaked, leaked


# --------------------------------------------------------------------- CLI
def _load_tool():
    spec = importlib.util.spec_from_file_location('export_onnx_tool', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_family_with_checkpoint(tmp_path):
    """--backbone with a whole-detector-style checkpoint (backbone. prefix),
    dynamic: the file computes what the checkpointed model computes."""
    torch.manual_seed(1)
    src = mmvisbackbones.BACKBONES['MLLA'](arch='test').eval()
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, ckpt)
    out = tmp_path / 'mlla.onnx'
    r = subprocess.run([sys.executable, TOOL, '--backbone', 'MLLA', '--arch', 'test',
                        '--checkpoint', str(ckpt), '--shape', '64', '64', '--dynamic',
                        '--check-shape', '47', '81', '--out', str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert f'loaded {ckpt}' in log
    assert log.count(' ok\n') == 8  # 4 outputs x 2 input shapes in the table
    assert '2x3x47x81' in log and 'OK: MLLA' in log
    x = torch.randn(1, 3, 50, 70)
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    got = sess.run(None, {'input': x.numpy()})
    with torch.no_grad():
        ref = src(x)
    for g, t in zip(got, ref):
        np.testing.assert_allclose(g, t.numpy(), rtol=0, atol=1e-4 * float(t.abs().max()))


def test_cli_config(tmp_path):
    """--config: an mmseg config's model.backbone (custom_imports honoured),
    its pretrained checkpoint absent, so random weights are said out loud."""
    cfg = osp.join(ROOT, 'configs', 'pvtv2', 'upernet_pvtv2-b1_4xb4-160k_ade20k-512x512.py')
    out = tmp_path / 'pvt.onnx'
    r = subprocess.run([sys.executable, TOOL, '--config', cfg, '--shape', '64', '64',
                        '--out', str(out)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert 'built PVTv2' in log and 'RANDOM weights' in log
    assert log.count(' ok\n') == 4 and 'OK: PVTv2' in log
    _, outputs = graph_dims(out)
    assert [d[1] for _, d in outputs] == [64, 128, 320, 512]  # PVTv2-b1 channels


def test_cli_fails_with_nonzero_status(tmp_path, capsys):
    tool = _load_tool()
    rc = tool.main(['--backbone', 'PVTv2', '--arch', 'test', '--shape', '64', '64',
                    '--rtol', '0', '--atol', '0', '--out', str(tmp_path / 'p.onnx')])
    assert rc == 1
    err = capsys.readouterr().err
    assert 'FAILED (OnnxVerificationError)' in err and "output 'out" in err
    with pytest.raises(SystemExit) as exc:
        tool.main(['--backbone', 'PVTv2', '--check-shape', '40', '40'])
    assert exc.value.code == 2
    with pytest.raises(SystemExit, match='not an mmvisbackbones backbone'):
        tool.main(['--config', osp.join(ROOT, 'configs', 'swin', 'mask-rcnn_swin-t_fpn_1x_coco.py'),
                   '--cfg-options', 'model.backbone.type=mmdet.ResNet'])


def test_cli_dynamic_falls_back_to_static_and_says_so(tmp_path, monkeypatch, capsys):
    """A backbone whose dynamic graph does not hold: the tool writes and
    verifies a static graph and says why; --strict-dynamic fails instead."""
    tool = _load_tool()
    monkeypatch.setitem(mmvisbackbones.BACKBONES, 'FrozenWidth', lambda arch: FrozenWidth())
    out = tmp_path / 'f.onnx'
    args = ['--backbone', 'FrozenWidth', '--shape', '64', '64', '--dynamic', '--out', str(out)]
    assert tool.main(args) == 0
    log = capsys.readouterr().out
    assert 'a STATIC graph (1x3x64x64 only) was written and verified' in log
    assert 'FrozenWidth does not export with dynamic shapes' in log
    assert graph_dims(out)[0] == [('input', [1, 3, 64, 64])]
    assert tool.main(args + ['--strict-dynamic']) == 1
    assert 'FAILED (DynamicShapeError)' in capsys.readouterr().err


def test_import_does_not_load_onnx():
    code = ('import sys, mmvisbackbones; '
            'bad = [m for m in ("onnx", "onnxruntime", "mmvisbackbones.deploy") '
            'if m in sys.modules]; assert not bad, bad')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
