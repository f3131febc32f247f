"""ONNX export of a backbone, verified against PyTorch with onnxruntime.

:func:`export_backbone` exports any backbone of this package (any
``nn.Module`` whose ``forward(x)`` returns a tuple of tensors) with the
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17):
input ``input`` (N, C, H, W), outputs ``out0 .. outK``, one per pyramid
level.  With ``dynamic=True`` the batch, height and width axes are dynamic.

Verification (:func:`verify_onnx`) runs the file with onnxruntime's
``CPUExecutionProvider`` on seeded random inputs and compares every output
with the PyTorch model in eager fp32: at the export shape and, for a dynamic
export, at a second shape with another batch size and odd, non-square H and
W (:func:`default_check_shape`).  An output passes when

    max |onnx - torch| <= atol + rtol * max |torch|

(defaults ``rtol=1e-4``, ``atol=1e-5``); the report gives both numbers and
their ratio.  A failure raises :class:`OnnxVerificationError`, never a
warning: an exported model that computes something else than PyTorch is a
bug.

Why the TorchScript exporter: it traces the model as it runs, so the pure
PyTorch paths of the ops (the selective scan, WKV, routed attention) are what
is exported; a Triton kernel never is (the export runs on the CPU with
``MMVB_SCAN_BACKEND=torch``).  Tracing records tensor shapes symbolically,
but a size that passes through Python (``int(h)``, ``math.ceil(H / s)``,
``if pad:``) is frozen at the export size.  The dynamic check at the second
shape detects such graphs; the trace warnings the exporter emitted in model
code (file:line) are listed in the error, and a family that cannot export
dynamically is refused unless ``allow_static_fallback=True`` is passed
(then a static graph is written and the report says why).
"""
import contextlib
import copy
import dataclasses
import os
import os.path as osp
import traceback
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

DEFAULT_OPSET = 17
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
INPUT_NAME = 'input'
_PIP = 'pip install onnx onnxruntime'
_SCAN_ENV = 'MMVB_SCAN_BACKEND'
_PKG_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
_TORCH_DIR = osp.dirname(osp.abspath(torch.__file__))


class OnnxExportError(RuntimeError):
    """``torch.onnx.export`` itself failed."""


class OnnxVerificationError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's (or the graph does not run).
    ``report`` holds the full :class:`ExportReport` (or None)."""

    def __init__(self, message: str, report: Optional['ExportReport'] = None):
        super().__init__(message)
        self.report = report


class DynamicShapeError(OnnxVerificationError):
    """A dynamic export that only works at the export shape: some size was
    frozen during tracing."""


def _require(name: str):
    try:
        return __import__(name)
    except ImportError as e:
        raise ImportError(f'ONNX export needs the {name!r} package, which is not installed: '
                          f'{_PIP}') from e


# ----------------------------------------------------------------- report
@dataclasses.dataclass
class OutputCheck:
    """One output at one input shape."""
    name: str
    shape: Tuple[int, ...]
    max_abs_err: float
    ref_max_abs: float
    tolerance: float
    problem: Optional[str] = None  # shape mismatch, non-finite values

    @property
    def rel_err(self) -> float:
        """max |onnx - torch| / max |torch|."""
        return self.max_abs_err / self.ref_max_abs if self.ref_max_abs > 0 else self.max_abs_err

    @property
    def ok(self) -> bool:
        return self.problem is None and self.max_abs_err <= self.tolerance


@dataclasses.dataclass
class ShapeCheck:
    """All outputs at one input shape; ``error`` when the graph did not run."""
    input_shape: Tuple[int, ...]
    outputs: List[OutputCheck]
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs)


@dataclasses.dataclass
class ExportReport:
    path: str
    model: str
    opset: int
    dynamic: bool
    input_shape: Tuple[int, ...]
    output_names: List[str]
    rtol: float
    atol: float
    checks: List[ShapeCheck] = dataclasses.field(default_factory=list)
    #: ``file:line: message`` of the exporter's trace warnings raised in model
    #: code (where a Python value was frozen at the export size)
    trace_warnings: List[str] = dataclasses.field(default_factory=list)
    #: why a requested dynamic export was replaced by a static one
    fallback_reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_rel_err(self) -> float:
        errs = [o.rel_err for c in self.checks for o in c.outputs]
        return max(errs) if errs else float('nan')

    @property
    def max_abs_err(self) -> float:
        errs = [o.max_abs_err for c in self.checks for o in c.outputs]
        return max(errs) if errs else float('nan')

    def table(self) -> str:
        """The verification results, one line per output and input shape."""
        head = (f'{"input":<16} {"output":<7} {"shape":<18} {"max|onnx-torch|":>15} '
                f'{"max|torch|":>10} {"rel err":>9} {"tol":>9}  result')
        lines = [head, '-' * len(head)]
        for c in self.checks:
            shape = 'x'.join(map(str, c.input_shape))
            if c.error is not None:
                lines.append(f'{shape:<16} onnxruntime failed: {c.error}')
            for o in c.outputs:
                res = 'ok' if o.ok else f'FAIL{": " + o.problem if o.problem else ""}'
                lines.append(f'{shape:<16} {o.name:<7} {"x".join(map(str, o.shape)):<18} '
                             f'{o.max_abs_err:>15.3e} {o.ref_max_abs:>10.3e} {o.rel_err:>9.2e} '
                             f'{o.tolerance:>9.2e}  {res}')
        return '\n'.join(lines)

    def summary(self) -> str:
        kind = 'dynamic (batch, height, width)' if self.dynamic else 'static'
        s = (f'{self.model} -> {self.path} (opset {self.opset}, {kind}, input '
             f'{"x".join(map(str, self.input_shape))}, outputs {", ".join(self.output_names)})')
        if self.checks:
            s += (f': {"verified" if self.ok else "FAILED"} at '
                  f'{", ".join("x".join(map(str, c.input_shape)) for c in self.checks)}, '
                  f'max rel err {self.max_rel_err:.2e} (pass: max|onnx-torch| <= '
                  f'{self.atol:g} + {self.rtol:g} * max|torch|)')
        if self.fallback_reason:
            s += f'\nstatic fallback: {self.fallback_reason}'
        return s


# ------------------------------------------------------------- helpers
def default_check_shape(input_shape: Sequence[int], min_size: int = 32) -> Tuple[int, ...]:
    """A second shape for the dynamic check: one more sample, odd H about
    7/8 of the export's and odd W about 5/4 of it (224x224 -> 197x281,
    64x64 -> 57x81), never below ``min_size``."""
    n, c, h, w = (int(v) for v in input_shape)

    def odd(v):
        v = max(v, min_size)
        return v if v % 2 else v + 1

    h2, w2 = odd(h * 7 // 8), odd(w * 5 // 4)
    if h2 == h:
        h2 += 2
    if w2 == w:
        w2 += 2
    return (n + 1, c, h2, w2)


@contextlib.contextmanager
def _torch_ops():
    """The ops' pure-PyTorch paths (what is exported and compared)."""
    old = os.environ.get(_SCAN_ENV)
    os.environ[_SCAN_ENV] = 'torch'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_SCAN_ENV, None)
        else:
            os.environ[_SCAN_ENV] = old


def _model_frame(stack) -> Optional[str]:
    """The innermost frame outside torch: where the model froze a value."""
    for fr in reversed(stack):
        f = osp.abspath(fr.filename)
        if f.startswith(_TORCH_DIR) or f == osp.abspath(__file__) or \
                osp.basename(f) == 'warnings.py':
            continue
        if f.startswith(_PKG_DIR):
            f = osp.relpath(f, osp.dirname(_PKG_DIR))
        return f'{f}:{fr.lineno} ({fr.name})'
    return None


@contextlib.contextmanager
def _exporter_warnings(collected: List[str]):
    """Silence the legacy exporter's deprecation and constant-folding notes
    (this module chooses that exporter on purpose, see the module doc) and
    collect its TracerWarnings with the model-code line that caused them."""
    tracer_warning = getattr(torch.jit, 'TracerWarning', None)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=r'.*legacy TorchScript-based ONNX export')
        warnings.filterwarnings('ignore', message=r'.*feature will be removed')
        warnings.filterwarnings('ignore', message=r'.*Constant folding')
        warnings.filterwarnings('ignore', category=DeprecationWarning, module=r'torch\.onnx')
        if tracer_warning is not None:
            warnings.simplefilter('always', tracer_warning)
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if tracer_warning is not None and issubclass(category, tracer_warning):
                where = _model_frame(traceback.extract_stack()[:-1]) or f'{filename}:{lineno}'
                text = f'{where}: {str(message).split(". ")[0]}'
                if text not in collected:
                    collected.append(text)
                return
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        # torch's legacy exporter turns its log on for every export (it tests
        # the function object ``_jit_is_onnx_log_enabled``, always true) and
        # then prints the whole TorchScript graph to stdout when a pass fails:
        # megabytes for a backbone.  The error itself says what failed.
        log = getattr(torch._C, '_jit_onnx_log', None)
        if log is not None:
            torch._C._jit_onnx_log = lambda *args: None
        try:
            yield
        finally:
            warnings.showwarning = previous
            if log is not None:
                torch._C._jit_onnx_log = log


def _first_line(e: BaseException, limit: int = 600) -> str:
    text = str(e).strip()
    return f'{type(e).__name__}: {text.splitlines()[0][:limit]}' if text else type(e).__name__


def _as_outputs(out, name: str) -> Tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        out = (out, )
    if not isinstance(out, (tuple, list)) or not out or not all(
            isinstance(t, torch.Tensor) for t in out):
        raise TypeError(f'{name}.forward must return a tensor or a tuple of tensors to be '
                        f'exported, got {type(out).__name__}')
    return tuple(out)


def _random_input(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def _prepare(model: nn.Module) -> nn.Module:
    """The model in eval mode, on the CPU, in fp32 (a copy if it is not
    there already: the caller's model is not moved)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f'export_backbone needs an nn.Module, got {type(model).__name__}')
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device.type != 'cpu' or (t.is_floating_point() and t.dtype != torch.float32)
           for t in tensors):
        model = copy.deepcopy(model).cpu().float()
    return model.eval()


# --------------------------------------------------------------- verify
def verify_onnx(path: str, model: nn.Module, shapes: Sequence[Sequence[int]],
                rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, seed: int = 0,
                raise_on_failure: bool = True, report: Optional[ExportReport] = None
                ) -> List[ShapeCheck]:
    """Run ``path`` with onnxruntime (CPU) and ``model`` in eager fp32 on the
    same seeded random inputs, one per shape in ``shapes``, and compare every
    output.  Raises :class:`OnnxVerificationError` naming the first failing
    output, its shape and its error (unless ``raise_on_failure=False``)."""
    np = _require('numpy')
    ort = _require('onnxruntime')
    model = _prepare(model)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures are reported by the exception, not on stderr
    try:
        sess = ort.InferenceSession(os.fspath(path), sess_options=opts,
                                    providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime raises its own exception types
        raise OnnxVerificationError(f'onnxruntime cannot load {path} (exported from '
                                    f'{type(model).__name__}): {_first_line(e)}', report) from e
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    checks = []
    for i, shape in enumerate(shapes):
        shape = tuple(int(s) for s in shape)
        x = _random_input(shape, seed + i)
        with torch.no_grad(), _torch_ops():
            ref = _as_outputs(model(x), type(model).__name__)
        try:
            got = sess.run(None, {in_name: x.numpy()})
        except Exception as e:  # onnxruntime raises its own exception types
            checks.append(ShapeCheck(shape, [], error=_first_line(e)))
            continue
        outs = []
        if len(got) != len(ref):
            checks.append(ShapeCheck(shape, [], error=f'the graph has {len(got)} outputs, '
                                     f'the model returns {len(ref)}'))
            continue
        for name, g, r in zip(out_names, got, ref):
            r = r.detach().double().numpy()
            g = np.asarray(g, dtype=np.float64)
            ref_max = float(np.abs(r).max()) if r.size else 0.0
            tol = atol + rtol * ref_max
            if g.shape != r.shape:
                outs.append(OutputCheck(name, tuple(r.shape), float('inf'), ref_max, tol,
                                        problem=f'onnx shape {tuple(g.shape)} != torch shape '
                                        f'{tuple(r.shape)}'))
                continue
            finite_g, finite_r = np.isfinite(g), np.isfinite(r)
            problem = None
            if not (finite_g == finite_r).all():
                problem = (f'{int((~finite_g).sum())} non-finite onnx values vs '
                           f'{int((~finite_r).sum())} in torch')
            both = finite_g & finite_r
            err = float(np.abs(g[both] - r[both]).max()) if both.any() else 0.0
            if not finite_r.all():
                ref_max = float(np.abs(r[finite_r]).max()) if finite_r.any() else 0.0
            outs.append(OutputCheck(name, tuple(r.shape), err, ref_max, tol, problem))
        checks.append(ShapeCheck(shape, outs))
    if report is None:  # a report of the check alone, for the error
        report = ExportReport(os.fspath(path), type(model).__name__, 0, False,
                              tuple(shapes[0]) if shapes else (), out_names, rtol, atol)
    report.checks = checks
    if raise_on_failure:
        failure = _describe_failure(checks)
        if failure:
            raise OnnxVerificationError(f'ONNX verification of {path} failed: {failure}\n'
                                        f'{report.table()}', report)
    return checks


def _describe_failure(checks: Sequence[ShapeCheck]) -> Optional[str]:
    for c in checks:
        shape = 'x'.join(map(str, c.input_shape))
        if c.error is not None:
            return f'onnxruntime could not run the graph at input shape {shape}: {c.error}'
        for o in c.outputs:
            if not o.ok:
                if o.problem and o.max_abs_err == float('inf'):
                    return f'output {o.name!r} at input shape {shape}: {o.problem}'
                detail = f'; {o.problem}' if o.problem else ''
                return (f'output {o.name!r} (shape {"x".join(map(str, o.shape))}) at input '
                        f'shape {shape}: max |onnx - torch| = {o.max_abs_err:.3e}, max |torch| = '
                        f'{o.ref_max_abs:.3e} (relative {o.rel_err:.2e}), tolerance '
                        f'{o.tolerance:.2e}{detail}')
    return None


# --------------------------------------------------------------- export
def _export(model, path, x, output_names, dynamic, opset, collected):
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
        for i, name in enumerate(output_names):
            dynamic_axes[name] = {0: 'batch', 2: f'height{i}', 3: f'width{i}'}
    try:
        with torch.no_grad(), _torch_ops(), _exporter_warnings(collected):
            torch.onnx.export(model, (x, ), os.fspath(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(output_names),
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
    except Exception as e:
        where = ''
        tb = traceback.extract_tb(e.__traceback__)
        frame = _model_frame(tb)
        if frame:
            where = f' (last model-code frame: {frame})'
        raise OnnxExportError(
            f'torch.onnx.export (TorchScript exporter, opset {opset}, '
            f'{"dynamic" if dynamic else "static"}) failed for {type(model).__name__} at input '
            f'{"x".join(map(str, x.shape))}: {_first_line(e)}{where}') from e


def _declare_output_shapes(path: str, outs: Sequence[torch.Tensor], dynamic: bool):
    """Write the outputs' shapes into the graph: the exporter's shape
    inference often leaves them unknown.  Static: the traced shapes; dynamic:
    ``batch, C, height{i}, width{i}`` with the channel count fixed.  (The
    onnxruntime check that follows runs on the file as written.)"""
    import onnx
    m = onnx.load(path)
    for i, (value, t) in enumerate(zip(m.graph.output, outs)):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != t.dim():
            continue
        for j, d in enumerate(dims):
            size = int(t.shape[j])
            if dynamic and t.dim() == 4 and j != 1:
                d.dim_param = ('batch', None, f'height{i}', f'width{i}')[j]
            else:
                d.dim_value = size
    onnx.checker.check_model(m)
    onnx.save(m, path)


def export_backbone(model: nn.Module,
                    path: str,
                    input_shape: Sequence[int] = (1, 3, 224, 224),
                    dynamic: bool = False,
                    opset: int = DEFAULT_OPSET,
                    verify: bool = True,
                    second_shape: Optional[Sequence[int]] = None,
                    rtol: float = DEFAULT_RTOL,
                    atol: float = DEFAULT_ATOL,
                    allow_static_fallback: bool = False,
                    seed: int = 0) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and (``verify``) check it with
    onnxruntime against PyTorch.

    Args:
        model: a backbone (``forward(x) -> tuple`` of NCHW tensors); put in
            eval mode and exported on the CPU in fp32 (a copy is exported if
            it lives elsewhere).
        path: the ``.onnx`` file to write.
        input_shape: ``(N, C, H, W)`` traced (and checked).
        dynamic: make batch, height and width dynamic and check the graph also
            at ``second_shape`` (default: :func:`default_check_shape`).
        opset: ONNX opset (17).
        verify: run the onnxruntime check (``onnxruntime`` needed).
        rtol, atol: an output passes when ``max|onnx - torch| <= atol + rtol *
            max|torch|``.
        allow_static_fallback: when the dynamic export fails (the exporter
            fails or the graph does not hold at ``second_shape``), write and
            verify a static graph instead of raising; the report's
            ``fallback_reason`` says why.

    Returns:
        :class:`ExportReport` (errors per output and shape).

    Raises:
        OnnxExportError: the exporter failed.
        OnnxVerificationError: the graph differs from PyTorch at the export
            shape.
        DynamicShapeError: ``dynamic`` and the graph works at the export shape
            only (unless ``allow_static_fallback``).
    """
    _require('onnx')
    if verify:
        _require('onnxruntime')
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f'input_shape must be (N, C, H, W), got {input_shape}')
    if second_shape is not None and not dynamic:
        raise ValueError('second_shape is only checked for a dynamic export (dynamic=True)')
    name = type(model).__name__
    model = _prepare(model)
    x = _random_input(input_shape, seed)
    with torch.no_grad(), _torch_ops():
        outs = _as_outputs(model(x), name)
    output_names = [f'out{i}' for i in range(len(outs))]
    path = os.fspath(path)
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)

    def run(is_dynamic: bool) -> ExportReport:
        report = ExportReport(path, name, opset, is_dynamic, input_shape, output_names,
                              rtol, atol)
        _export(model, path, x, output_names, is_dynamic, opset, report.trace_warnings)
        _declare_output_shapes(path, outs, is_dynamic)
        if not verify:
            return report
        shapes = [input_shape]
        if is_dynamic:
            shapes.append(tuple(int(s) for s in second_shape) if second_shape is not None else
                          default_check_shape(input_shape, getattr(model, 'min_input_size', 32)))
        verify_onnx(path, model, shapes, rtol, atol, seed, raise_on_failure=False, report=report)
        failure = _describe_failure(report.checks[:1])
        if failure:  # wrong at the very shape it was traced at
            raise OnnxVerificationError(f'ONNX verification of {name} ({path}) failed: '
                                        f'{failure}\n{report.table()}', report)
        failure = _describe_failure(report.checks[1:])
        if failure:
            shown = report.trace_warnings[:20]
            frozen = '\n  '.join(shown) or '(none reported)'
            if len(report.trace_warnings) > len(shown):
                frozen += (f'\n  ... {len(report.trace_warnings) - len(shown)} more '
                           '(ExportReport.trace_warnings)')
            raise DynamicShapeError(
                f'{name} does not export with dynamic shapes: the graph traced at '
                f'{"x".join(map(str, input_shape))} matches PyTorch there but not at another '
                f'size, so a size was frozen during tracing. {failure}\nTrace warnings in '
                f'model code (Python values frozen at the export size):\n  {frozen}\n'
                f'{report.table()}\nExport with static shapes (dynamic=False), or pass '
                'allow_static_fallback=True (--static-fallback) to fall back to them.', report)
        return report

    if not dynamic:
        return run(False)
    try:
        return run(True)
    except (DynamicShapeError, OnnxExportError) as e:
        if not allow_static_fallback:
            raise
        reason = str(e).split('\n')[0]
    warnings.warn(f'{name}: dynamic ONNX export failed, writing a static graph at '
                  f'{"x".join(map(str, input_shape))} instead (allow_static_fallback): {reason}',
                  stacklevel=2)
    report = run(False)
    report.fallback_reason = reason
    return report
