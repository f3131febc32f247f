"""FLOP counting: known layer counts, the recurrences' formulas counted once,
the ops' shape-only meta path, and VMamba against upstream's published FLOPs."""
import pytest
import torch
import torch.nn as nn

from mmvisbackbones.ops import bi_wkv, bidirectional_scan, selective_scan, ss2d_scan
from mmvisbackbones.utils import count_flops


class ConvLinear(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(2).transpose(1, 2))


def test_conv_and_linear_macs():
    r = count_flops(ConvLinear(), (2, 3, 16, 10))
    conv = 2 * 16 * 10 * 8 * 3 * 9
    fc = 2 * 16 * 10 * 8 * 4
    assert r['total'] == conv + fc, r


def _scan_inputs(device, Bt=2, D=6, L=9, N=3, G=1):
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(u=mk(Bt, D, L), delta=mk(Bt, D, L), A=-mk(D, N).abs(), B=mk(Bt, G, N, L),
                C=mk(Bt, G, N, L), D=mk(D), z=mk(Bt, D, L))


class Op(nn.Module):
    """A module whose forward is one op (so count_flops can run it)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_selective_scan_formula(device):
    a = _scan_inputs(device)
    r = count_flops(Op(lambda x: selective_scan(**a)), (1, ))
    assert r['by_op'] == {'selective_scan': 2 * 9 * 6 * (9 * 3 + 2)}


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_ss2d_counts_its_inner_scan_once(device):
    Bt, P, H, W, N = 1, 4, 5, 3, 2
    x = torch.randn(Bt, P, H, W, device=device)
    dt = torch.randn(Bt, 4 * P, H, W, device=device)
    A = -torch.rand(4 * P, N, device=device)
    Bs = torch.randn(Bt, 4, N, H, W, device=device)
    r = count_flops(Op(lambda _: ss2d_scan(x, dt, A, Bs, Bs, D=torch.ones(4 * P, device=device))),
                    (1, ))
    assert r['by_op'] == {'selective_scan': Bt * H * W * 4 * P * (9 * N + 1)}


@pytest.mark.parametrize('bc_dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
def test_meta_path_matches_real_shapes_and_dtypes(dtype, bc_dtype):
    # bc_dtype: a float64 B/C alone makes the ops compute (and return fp32
    # results) in float64; the meta path must say the same

    def run(device):
        a = {k: (v.to(dtype) if k in ('u', 'delta', 'z') else
                 v.to(bc_dtype) if k in ('B', 'C') else v)
             for k, v in _scan_inputs(device, D=8, G=2).items()}
        outs = [*selective_scan(**a, return_last_state=True),
                selective_scan(**a, out_fp32=True)]
        a2 = dict(a, B=a['B'], z=a['z'][:, :4])
        outs.append(bidirectional_scan(a2['u'], a2['delta'], a2['A'], a2['B'], a2['C'],
                                       D=a2['D'], z=a2['z']))
        x = a['u'][:, :2, :9].reshape(2, 2, 3, 3)
        outs.append(ss2d_scan(x, torch.zeros(2, 8, 3, 3, device=device, dtype=dtype),
                              -torch.ones(8, 3, device=device),
                              torch.zeros(2, 4, 3, 3, 3, device=device, dtype=bc_dtype),
                              torch.zeros(2, 4, 3, 3, 3, device=device, dtype=bc_dtype)))
        k = a['u'].transpose(1, 2)
        outs.append(bi_wkv(torch.ones(8, device=device), torch.ones(8, device=device), k, k))
        return outs

    for real, meta in zip(run('cpu'), run('meta')):
        assert meta.is_meta
        assert (meta.shape, meta.dtype) == (real.shape, real.dtype)


#: GFLOPs at 224x224 published by the upstream projects (classification
#: models; their heads add < 0.01G).  The recurrences are counted with
#: upstream's own formulas, so the scan models compare like for like.
UPSTREAM_GFLOPS = [
    ('VMamba', 'tiny', 4.9), ('VMamba', 'small', 8.7), ('VMamba', 'base', 15.4),  # MzeroMiko
    ('Swin', 'tiny', 4.5), ('Swin', 'small', 8.7), ('Swin', 'base', 15.4),  # paper, Table 1
    ('Swin', 'base_384', 47.0),  # at 384x384
    ('PVTv2', 'b0', 0.6), ('PVTv2', 'b1', 2.1), ('PVTv2', 'b2', 4.0), ('PVTv2', 'b2_li', 3.9),
    ('PVTv2', 'b3', 6.9), ('PVTv2', 'b4', 10.1), ('PVTv2', 'b5', 11.8),  # whai362/PVT
    ('MLLA', 'tiny', 4.2), ('MLLA', 'small', 7.3), ('MLLA', 'base', 16.2),  # LeapLabTHU/MLLA
]


@pytest.mark.parametrize('name,arch,upstream_gflops', UPSTREAM_GFLOPS,
                         ids=[f'{n}-{a}' for n, a, _ in UPSTREAM_GFLOPS])
def test_flops_match_upstream(name, arch, upstream_gflops):
    """Within 2% (and the rounding of the published figure) of upstream's
    count: catches a wrong arch table or a block that does too much or too
    little work."""
    from mmvisbackbones import BACKBONES
    size = 384 if arch.endswith('_384') else 224
    with torch.device('meta'):
        net = BACKBONES[name](arch=arch)
    gflops = count_flops(net, (1, 3, size, size))['total'] / 1e9
    assert abs(gflops - upstream_gflops) <= 0.02 * upstream_gflops + 0.05, gflops


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_sdpa_counted_on_every_device(device):
    q = torch.randn(2, 3, 10, 8, device=device)
    k = torch.randn(2, 3, 7, 8, device=device)
    v = torch.randn(2, 3, 7, 5, device=device)
    r = count_flops(Op(lambda _: torch.nn.functional.scaled_dot_product_attention(q, k, v)),
                    (1, ))
    assert r['total'] == 2 * 3 * 10 * 7 * (8 + 5), r
