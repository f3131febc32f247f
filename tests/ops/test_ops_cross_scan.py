import pytest
import torch

from mmvisbackbones.ops import cross_merge as public_cross_merge
from mmvisbackbones.ops import cross_scan as public_cross_scan
from mmvisbackbones.ops.cross_scan import (cross_merge, cross_merge_naive,
                                           cross_scan, cross_scan_naive,
                                           scan_index)

SIZES = [(1, 1), (3, 5), (7, 4), (4, 4), (1, 6), (5, 1)]


def test_public_exports():
    assert public_cross_scan is cross_scan
    assert public_cross_merge is cross_merge


def test_directions_by_hand():
    # 2x3 image with pixel values = row-major index
    x = torch.arange(6.).view(1, 1, 2, 3)
    expected = torch.tensor([
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],  # row-major reversed
        [5, 2, 4, 1, 3, 0],  # column-major reversed
    ]).float()
    for fn in (cross_scan, cross_scan_naive):
        assert torch.equal(fn(x)[0, :, 0], expected)
    assert torch.equal(scan_index(2, 3), expected.long())
    # each direction viewed as (H, W) and merged back gives 4 * x
    y = expected.view(1, 4, 1, 2, 3)
    for fn in (cross_merge, cross_merge_naive):
        assert torch.equal(fn(y), 4 * x)


@pytest.mark.parametrize('H,W', SIZES)
def test_cross_scan_matches_naive(H, W):
    torch.manual_seed(0)
    x = torch.randn(2, 3, H, W)
    out = cross_scan(x)
    assert out.shape == (2, 4, 3, H * W)
    assert torch.equal(out, cross_scan_naive(x))
    assert torch.equal(out[:, 0], x.flatten(2))
    assert torch.equal(out[:, 1], x.transpose(2, 3).flatten(2))


@pytest.mark.parametrize('H,W', SIZES)
def test_cross_merge_matches_naive(H, W):
    torch.manual_seed(1)
    y = torch.randn(2, 4, 3, H, W)
    out = cross_merge(y)
    assert out.shape == (2, 3, H, W)
    torch.testing.assert_close(out, cross_merge_naive(y), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('H,W', SIZES)
def test_adjoint_identity(H, W):
    torch.manual_seed(2)
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    y = torch.randn(2, 4, 3, H, W, dtype=torch.float64)
    lhs = (cross_scan(x) * y.flatten(3)).sum()
    rhs = (x * cross_merge(y)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    lhs_n = (cross_scan_naive(x) * y.flatten(3)).sum()
    rhs_n = (x * cross_merge_naive(y)).sum()
    torch.testing.assert_close(lhs_n, rhs_n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('H,W', [(1, 1), (3, 5), (4, 2)])
def test_gradcheck_fp64(H, W):
    torch.manual_seed(3)
    x = torch.randn(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, H, W, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cross_scan, (x, ))
    assert torch.autograd.gradcheck(cross_merge, (y, ))
    # backward of each is the other Function, so double backward works too
    assert torch.autograd.gradgradcheck(cross_scan, (x, ))
    assert torch.autograd.gradgradcheck(cross_merge, (y, ))


def test_grads_flow_and_equal_the_adjoint():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 3, 5, requires_grad=True)
    g = torch.randn(2, 4, 3, 15)
    cross_scan(x).backward(g)
    torch.testing.assert_close(x.grad, cross_merge_naive(g.view(2, 4, 3, 3, 5)))

    y = torch.randn(2, 4, 3, 3, 5, requires_grad=True)
    h = torch.randn(2, 3, 3, 5)
    cross_merge(y).backward(h)
    torch.testing.assert_close(y.grad, cross_scan_naive(h).view(2, 4, 3, 3, 5))

    # round trip scan -> merge is 4 * identity, so d(sum)/dx = 4
    x2 = torch.randn(1, 2, 4, 3, requires_grad=True)
    out = cross_merge(cross_scan(x2).view(1, 4, 2, 4, 3))
    torch.testing.assert_close(out, 4 * x2)
    out.sum().backward()
    torch.testing.assert_close(x2.grad, torch.full_like(x2, 4.0))


def test_non_contiguous_and_dtypes():
    torch.manual_seed(5)
    x = torch.randn(2, 5, 3, 3).permute(0, 3, 1, 2)  # (2, 3, 5, 3) strided
    assert not x.is_contiguous()
    assert torch.equal(cross_scan(x), cross_scan_naive(x.contiguous()))
    y = torch.randn(2, 4, 3, 5, 3).transpose(3, 4).contiguous().transpose(3, 4)
    torch.testing.assert_close(cross_merge(y), cross_merge_naive(y))
    xb = x.to(torch.bfloat16)
    assert cross_scan(xb).dtype == torch.bfloat16


@pytest.mark.parametrize('bad', [torch.randn(3, 4, 5), torch.randn(1, 2, 3, 4, 5)])
def test_cross_scan_bad_ndim(bad):
    with pytest.raises(ValueError, match=r'`x` must be 4-D'):
        cross_scan(bad)


def test_cross_merge_bad_inputs():
    with pytest.raises(ValueError, match=r'`y` must be 5-D'):
        cross_merge(torch.randn(2, 4, 3, 15))
    with pytest.raises(ValueError, match=r'K=4.*got K=2'):
        cross_merge(torch.randn(2, 2, 3, 3, 5))
    with pytest.raises(TypeError, match='torch.Tensor'):
        cross_scan([[1.0]])
