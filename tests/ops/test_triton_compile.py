"""Compile the Triton kernels for an H100 (sm_90) target ahead of time,
without a GPU: catches code-generation errors that TRITON_INTERPRET=1 (a
Python emulation) cannot see.  Selective scan in every mode (plain, SS2D,
bidirectional), forward and backward, and the bidirectional WKV kernels.  Runs in a subprocess with the
interpreter off (the test session has it on, and triton fixes that when a
kernel is defined)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip('triton')

SCRIPT = r'''
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmvisbackbones.ops.selective_scan import triton_scan as ts

FP32 = {'A_ptr', 'D_ptr', 'bias_ptr', 'states_ptr', 'last_ptr', 'dlast_ptr', 'dB_ptr', 'dC_ptr',
        'dA_ptr', 'dD_ptr', 'dbias_ptr'}
which, mode = sys.argv[1], int(sys.argv[2])
kern = ts._ssm_fwd_kernel if which == 'fwd' else ts._ssm_bwd_kernel
cx = dict(BLOCK_D=4, BLOCK_N=16, BLOCK_L=64, HAS_D=True, HAS_Z=mode != ts.SS2D, HAS_BIAS=True,
          SOFTPLUS=True, MODE=mode)
cx.update(SAVE_STATES=True) if which == 'fwd' else cx.update(HAS_DLAST=True)
sig = {}
for p in inspect.signature(kern.fn).parameters:
    if p in cx:
        sig[p] = 'constexpr'
    elif p.endswith('_ptr'):
        acc = mode != ts.PLAIN and p in ('out_ptr', 'du_ptr', 'dz_ptr')
        sig[p] = '*fp32' if (p in FP32 or acc) else '*bf16'
    else:
        sig[p] = 'i32'
c = triton.compile(ASTSource(fn=kern, signature=sig, constexprs=cx), target=GPUTarget('cuda', 90, 32))
assert c.asm.get('ptx'), 'no PTX'
print('COMPILED', which, mode)
'''


@pytest.mark.parametrize('mode', [0, 1, 2], ids=['plain', 'ss2d', 'bidir'])
@pytest.mark.parametrize('which', ['fwd', 'bwd'])
def test_scan_kernels_compile_for_sm90(which, mode):
    env = dict(os.environ, TRITON_INTERPRET='0')
    r = subprocess.run([sys.executable, '-c', SCRIPT, which, str(mode)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0 and 'COMPILED' in r.stdout, r.stderr[-3000:]


WKV_SCRIPT = r'''
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mmvisbackbones.ops.wkv import triton_wkv as tw

name = sys.argv[1]
kern = getattr(tw, name)
cx = dict(BLOCK_T=16, BLOCK_C=16)
if name == '_right_carry_kernel':
    cx.update(BWD=sys.argv[2] == 'bwd', NS=5 if sys.argv[2] == 'bwd' else 3)
elif name == '_fwd_kernel':
    cx.update(WRITE_LSE=True)
sig = {p: ('constexpr' if p in cx else '*fp32' if p.endswith('_ptr') else 'i32')
       for p in inspect.signature(kern.fn).parameters}
c = triton.compile(ASTSource(fn=kern, signature=sig, constexprs=cx), target=GPUTarget('cuda', 90, 32))
assert c.asm.get('ptx'), 'no PTX'
print('COMPILED', name)
'''


@pytest.mark.parametrize('name,arg', [('_right_carry_kernel', 'fwd'), ('_right_carry_kernel', 'bwd'),
                                      ('_fwd_kernel', ''), ('_bwd_kernel', '')])
def test_wkv_kernels_compile_for_sm90(name, arg):
    env = dict(os.environ, TRITON_INTERPRET='0')
    r = subprocess.run([sys.executable, '-c', WKV_SCRIPT, name, arg], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0 and 'COMPILED' in r.stdout, r.stderr[-3000:]
