"""BEVFormer's parts against straightforward references: the camera
projection, the temporal alignment of the previous BEV, temporal
self-attention and spatial cross-attention (forward and gradients), box
coding, the NMS-free decoding and the Hungarian matching."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet3d')

from mmvisbackbones.detectors.bevformer.attention import (  # noqa: E402
    SpatialCrossAttention, TemporalSelfAttention)
from mmvisbackbones.detectors.bevformer.coder import (  # noqa: E402
    HungarianAssigner3D, NMSFreeCoder, denormalize_bbox, normalize_bbox)
from mmvisbackbones.detectors.bevformer.geometry import (  # noqa: E402
    bev_reference_points_2d, bev_reference_points_3d, bev_shift_from_can_bus,
    project_reference_points, rotate_bev)


# ----------------------------------------------------------------- helpers
def yaw_matrix(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def bilinear(value, loc):
    """Reference bilinear sampling with zero padding, pixel centres at
    (i + 0.5) / size (grid_sample's align_corners=False).
    value (H, W, C); loc (..., 2) normalised (x, y) -> (..., C)."""
    H, W, C = value.shape
    x = loc[..., 0] * W - 0.5
    y = loc[..., 1] * H - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            v = value[yi.clamp(0, H - 1).long(), xi.clamp(0, W - 1).long()]
            out = out + v * (wgt * ok)[..., None]
    return out


# ----------------------------------------------------------------- geometry
def test_projection_lands_where_the_pinhole_model_says():
    K = np.array([[250.0, 0, 160.0], [0, 250.0, 90.0], [0, 0, 1]])
    # camera looking along lidar +y (x right, y down): lidar x -> cam x,
    # lidar -z -> cam y, lidar y -> cam z; mounted 1.5 m up
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    t = -R @ np.array([0.0, 0.0, 1.5])
    l2c = np.eye(4)
    l2c[:3, :3], l2c[:3, 3] = R, t
    K4 = np.eye(4)
    K4[:3, :3] = K
    l2i = torch.tensor(K4 @ l2c, dtype=torch.float64)[None, None]       # (1, 1, 4, 4)
    pc = [-10.0, -10.0, -2.0, 10.0, 10.0, 2.0]
    pts = torch.tensor([[2.0, 8.0, 0.5],       # in front, inside the image
                        [1.0, -5.0, 0.0],      # behind the camera
                        [9.5, 1.0, 0.0],       # in front, far outside the image
                        [0.0, 6.0, -1.0]],     # projects into the padded rows only
                       dtype=torch.float64)
    pc_t = torch.tensor(pc, dtype=torch.float64)
    ref = ((pts - pc_t[:3]) / (pc_t[3:] - pc_t[:3]))[None, None]       # (1, D=1, 4, 3)
    img_shape = torch.tensor([[[180.0, 320.0]]], dtype=torch.float64)
    ref_cam, mask = project_reference_points(ref, pc, l2i, img_shape, pad_shape=(224, 320))
    cam = (R @ pts.numpy().T).T + t
    uv = (K @ cam.T).T
    uv = uv[:, :2] / uv[:, 2:]
    got = ref_cam[0, 0, :, 0].numpy() * np.array([320, 224])
    np.testing.assert_allclose(got[0], uv[0], rtol=0, atol=1e-9)
    assert mask[0, 0, :, 0].tolist() == [True, False, False, False]
    assert 180 < uv[3, 1] < 224          # the padded-row point is in the pad, masked


def test_reference_pillars_cover_the_range():
    ref = bev_reference_points_3d(2, 3, 4, bs=1)
    assert ref.shape == (1, 4, 6, 3)
    assert torch.allclose(ref[0, :, 0, 2], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(ref[0, 0, :, 0], torch.tensor([1, 3, 5, 1, 3, 5]) / 6.0)
    r2 = bev_reference_points_2d(2, 3, 2)
    assert r2.shape == (2, 6, 1, 2)
    assert torch.allclose(r2[0, :, 0], ref[0, 0, :, :2])


@pytest.mark.parametrize('motion', [(3.0, 1.0, 0.0), (2.0, -4.0, 15.0), (0.0, 0.0, -30.0),
                                    (5.0, 2.0, 40.0)])
def test_shift_and_rotation_move_a_blob_by_the_ego_motion(motion):
    """A world point seen in the previous BEV must appear, after aligning the
    previous BEV to the current ego pose, where it lies in the current LiDAR
    frame (nuScenes' LIDAR_TOP: yaw -90 in the ego frame)."""
    dx, dy, dyaw = motion
    bev, real = 64, 64.0                   # 1 m cells over [-32, 32]
    lidar_yaw = math.radians(-90)
    yaw_p = math.radians(20.0)
    t_p = np.array([100.0, 50.0, 0.0])
    yaw_c = yaw_p + math.radians(dyaw)
    t_c = t_p + np.array([dx, dy, 0.0])
    R_l = yaw_matrix(lidar_yaw)

    def world_to_lidar(w, t, yaw):
        return R_l.T @ yaw_matrix(yaw).T @ (w - t)

    w = t_c + yaw_matrix(yaw_c) @ R_l @ np.array([6.0, -9.0, 0.0])      # 6, -9 in current lidar
    q = world_to_lidar(w, t_p, yaw_p)
    p = world_to_lidar(w, t_c, yaw_c)
    assert np.allclose(p[:2], [6.0, -9.0])
    # previous BEV: a Gaussian blob at q
    ys, xs = torch.meshgrid(torch.arange(bev) + 0.5 - bev / 2, torch.arange(bev) + 0.5 - bev / 2,
                            indexing='ij')
    prev = torch.exp(-((xs - q[0]) ** 2 + (ys - q[1]) ** 2) / 2.0).double()
    prev = prev.reshape(1, -1, 1)
    can_bus = torch.zeros(1, 18, dtype=torch.float64)
    can_bus[0, 0], can_bus[0, 1] = dx, dy
    can_bus[0, -2] = yaw_c
    can_bus[0, -1] = dyaw
    rotated = rotate_bev(prev, can_bus[:, -1], bev, bev)
    shift = bev_shift_from_can_bus(can_bus, bev, bev, real, real, lidar_yaw_deg=-90.0)
    ref = bev_reference_points_2d(bev, bev, 1, dtype=torch.float64)[0, :, 0] + shift[0]
    aligned = bilinear(rotated.reshape(bev, bev, 1), ref).reshape(bev, bev)
    cx = (aligned * (xs.double())).sum() / aligned.sum()
    cy = (aligned * (ys.double())).sum() / aligned.sum()
    got = np.array([cx.item(), cy.item()])
    assert np.abs(got - p[:2]).max() < 0.25, (got, p[:2])
    assert aligned.sum() > 0.9 * prev.sum()          # the blob is moved, not lost
    # without the alignment the blob would be elsewhere (the test can fail)
    if abs(dx) + abs(dy) + abs(dyaw) > 0:
        assert np.abs(q[:2] - p[:2]).max() > 1.0


# ----------------------------------------------------------------- attention
def tsa_reference(m, query, value, query_pos, ref, bev_h, bev_w):
    """TSA by explicit per-query / head / point bilinear sampling."""
    bs, nq, C = query.shape
    H, P, nbq = m.num_heads, m.num_points, m.num_bev_queue
    q = query + query_pos
    qcat = torch.cat((value[:, 0], q), -1)
    off = m.sampling_offsets(qcat).view(bs, nq, H, nbq, 1, P, 2)
    w = m.attention_weights(qcat).view(bs, nq, H, nbq, P).softmax(-1)
    v = m.value_proj(value).view(bs, nbq, bev_h, bev_w, H, C // H)
    out = torch.zeros(bs, nbq, nq, C, dtype=query.dtype)
    for b in range(bs):
        for k in range(nbq):
            for h in range(H):
                acc = 0
                for p in range(P):
                    loc = ref[b, k, :, 0] + off[b, :, h, k, 0, p] / torch.tensor(
                        [bev_w, bev_h], dtype=query.dtype)
                    acc = acc + bilinear(v[b, k, :, :, h], loc) * w[b, :, h, k, p, None]
                out[b, k, :, h * (C // H):(h + 1) * (C // H)] = acc
    return m.output_proj(out.mean(1)) + query


def test_temporal_self_attention_matches_reference():
    torch.manual_seed(0)
    bev_h, bev_w, C, bs = 5, 7, 16, 2
    m = TemporalSelfAttention(C, num_heads=2, num_points=3, dropout=0.0).double()
    torch.nn.init.normal_(m.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(m.attention_weights.weight, std=0.5)
    query = torch.randn(bs, bev_h * bev_w, C, dtype=torch.float64, requires_grad=True)
    prev = torch.randn(bs, bev_h * bev_w, C, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(bs, bev_h * bev_w, C, dtype=torch.float64)
    ref2d = bev_reference_points_2d(bev_h, bev_w, bs, dtype=torch.float64)
    ref = torch.stack((ref2d + 0.05, ref2d), 1)
    shapes = torch.tensor([[bev_h, bev_w]])
    start = torch.tensor([0])
    value = torch.stack((prev, query), 1)
    out = m(query, value, None, pos, ref, shapes, start)
    exp = tsa_reference(m, query, value, pos, ref, bev_h, bev_w)
    torch.testing.assert_close(out, exp, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [query, prev, m.sampling_offsets.weight,
                                      m.value_proj.weight], g)
    grads_ref = torch.autograd.grad(exp, [query, prev, m.sampling_offsets.weight,
                                          m.value_proj.weight], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    # no previous BEV (and a sample marked without one) = the query stands in
    out_none = m(query, None, None, pos, ref, shapes, start)
    out_mask = m(query, value, torch.tensor([False, False]), pos, ref, shapes, start)
    torch.testing.assert_close(out_none, out_mask)
    exp_none = tsa_reference(m, query, torch.stack((query, query), 1), pos, ref, bev_h, bev_w)
    torch.testing.assert_close(out_none, exp_none, rtol=1e-9, atol=1e-9)


def sca_reference(m, query, value, shapes, ref_cam, mask, pos):
    """SCA: every query, every camera that hits it, explicit sampling."""
    N, bs, nv, C = value.shape
    att = m.deformable_attention
    H, L, P = att.num_heads, att.num_levels, att.num_points
    D = ref_cam.shape[3]
    q = query + pos
    out = torch.zeros_like(query)
    count = torch.zeros(bs, query.shape[1], 1, dtype=query.dtype)
    starts = [0]
    for h_, w_ in shapes.tolist():
        starts.append(starts[-1] + h_ * w_)
    for n in range(N):
        v = att.value_proj(value[n]).view(bs, nv, H, C // H)
        off = att.sampling_offsets(q).view(bs, -1, H, L, P // D, D, 2)
        w = att.attention_weights(q).view(bs, -1, H, L * P).softmax(-1).view(bs, -1, H, L,
                                                                            P // D, D)
        for b in range(bs):
            hit = mask[n, b].any(-1)
            res = torch.zeros(query.shape[1], C, dtype=query.dtype)
            for h in range(H):
                acc = 0
                for lvl, (hh, ww) in enumerate(shapes.tolist()):
                    vmap = v[b, starts[lvl]:starts[lvl + 1], h].view(hh, ww, -1)
                    for p in range(P // D):
                        for d in range(D):
                            loc = ref_cam[n, b, :, d] + off[b, :, h, lvl, p, d] / torch.tensor(
                                [ww, hh], dtype=query.dtype)
                            acc = acc + bilinear(vmap, loc) * w[b, :, h, lvl, p, d, None]
                res[:, h * (C // H):(h + 1) * (C // H)] = acc
            out[b] = out[b] + res * hit[:, None]
            count[b] += hit[:, None].to(query.dtype)
    return m.output_proj(out / count.clamp(min=1)) + query


@pytest.mark.parametrize('dense', [False, True])
def test_spatial_cross_attention_matches_reference(dense):
    torch.manual_seed(1)
    N, bs, nq, C, D = 3, 2, 11, 16, 2
    shapes = torch.tensor([[4, 6], [2, 3]])
    start = torch.tensor([0, 24])
    nv = 24 + 6
    m = SpatialCrossAttention(C, num_cams=N, dropout=0.0, num_heads=2, num_levels=2,
                              num_points=4, dense=dense).double()
    torch.nn.init.normal_(m.deformable_attention.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(m.deformable_attention.attention_weights.weight, std=0.5)
    query = torch.randn(bs, nq, C, dtype=torch.float64, requires_grad=True)
    value = torch.randn(N, bs, nv, C, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(bs, nq, C, dtype=torch.float64)
    ref_cam = torch.rand(N, bs, nq, D, 2, dtype=torch.float64)
    mask = torch.rand(N, bs, nq, D) > 0.6
    mask[:, 0, 0] = False            # a query no camera sees
    mask[:, 1, 1] = True             # a query every camera sees
    out = m(query, value, ref_cam, mask, shapes, start, query_pos=pos)
    exp = sca_reference(m, query, value, shapes, ref_cam, mask, pos)
    torch.testing.assert_close(out, exp, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(out)
    params = [query, value, m.deformable_attention.sampling_offsets.weight,
              m.deformable_attention.value_proj.weight, m.output_proj.weight]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(exp, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


# ----------------------------------------------------------------- boxes
def random_boxes(n, vel=True):
    g = torch.Generator().manual_seed(3)
    xyz = torch.rand(n, 3, generator=g) * 40 - 20
    dims = torch.rand(n, 3, generator=g) * 4 + 0.3
    yaw = torch.rand(n, 1, generator=g) * 2 * math.pi - math.pi
    parts = [xyz, dims, yaw] + ([torch.randn(n, 2, generator=g)] if vel else [])
    return torch.cat(parts, 1).double()


@pytest.mark.parametrize('vel', [True, False])
def test_encode_decode_is_identity(vel):
    boxes = random_boxes(17, vel)
    codes = normalize_bbox(boxes)
    assert codes.shape[1] == (10 if vel else 8)
    torch.testing.assert_close(denormalize_bbox(codes), boxes, rtol=1e-12, atol=1e-12)


def test_nms_free_decode_keeps_the_top_scores():
    coder = NMSFreeCoder(post_center_range=[-30, -30, -10, 30, 30, 10], max_num=6,
                         num_classes=3)
    boxes = random_boxes(8)
    boxes[:, 2] /= 4                         # heights inside the range
    boxes[2, 0] = 50.0                       # outside the post-centre range: dropped
    logits = torch.full((8, 3), -10.0, dtype=torch.float64)
    for i in range(8):
        logits[i, i % 3] = float(i)
    dec = coder.decode_single(logits, normalize_bbox(boxes))
    assert dec['scores'].tolist() == sorted(dec['scores'].tolist(), reverse=True)
    assert dec['labels'].tolist() == [7 % 3, 6 % 3, 5 % 3, 4 % 3, 3 % 3]
    torch.testing.assert_close(dec['bboxes'], boxes[[7, 6, 5, 4, 3]])
    assert dec['scores'].shape == (5, )      # the 6th best (query 2) is out of range


def test_perfect_prediction_is_matched_one_to_one_with_zero_box_cost():
    gt = random_boxes(6).float()
    labels = torch.tensor([0, 3, 1, 9, 3, 5])
    nq = 20
    perm = torch.randperm(nq)[:6]
    pred = torch.randn(nq, 10) * 5
    pred[perm] = normalize_bbox(gt)
    logits = torch.full((nq, 10), -4.0)
    logits[perm, labels] = 4.0
    assigner = HungarianAssigner3D()
    res = assigner.assign(pred, logits, gt, labels)
    assert (res.gt_inds > 0).sum() == 6
    for j, q in enumerate(perm.tolist()):
        assert res.gt_inds[q].item() == j + 1
        assert res.labels[q].item() == labels[j].item()
    reg = assigner.reg_cost(pred[perm, :8], normalize_bbox(gt)[:, :8]).diagonal()
    assert torch.all(reg.abs() < 1e-5)


def test_encoder_rebatched_equals_every_query_in_every_camera():
    """The whole encoder on projected pillars (non-contiguous from the
    projection): re-batched SCA = the dense formulation."""
    from bev_helpers import PC_RANGE, ring_lidar2img
    from mmvisbackbones.detectors.bevformer.transformer import BEVFormerEncoder, _level_meta
    torch.manual_seed(0)
    enc = BEVFormerEncoder(num_layers=2, pc_range=PC_RANGE, layer=dict(
        embed_dims=16, num_heads=2, num_levels=2, ffn_dims=32, dropout=0.0)).double().eval()
    bev, h, w = 6, 48, 64
    shapes, start = _level_meta([[6, 8], [3, 4]], 'cpu')
    feats = torch.randn(6, 1, 60, 16, dtype=torch.float64)
    q = torch.randn(1, bev * bev, 16, dtype=torch.float64)
    pos = torch.randn_like(q)
    prev = torch.randn_like(q)
    l2i = torch.tensor(ring_lidar2img(h, w))[None]
    shp = torch.tensor([[[h, w]] * 6], dtype=torch.float64)
    args = (q, feats, shapes, start, bev, bev, pos, l2i, shp, (h, w), prev,
            torch.tensor([True]), torch.tensor([[0.01, -0.02]], dtype=torch.float64))
    out = enc(*args)
    for layer in enc.layers:
        layer.sca.dense = True
    torch.testing.assert_close(enc(*args), out, rtol=1e-10, atol=1e-10)
