"""Selective scan as Triton kernels (forward and backward).

JIT-compiled on first use for CUDA tensors: no build step.  Also runs on the
CPU under ``TRITON_INTERPRET=1`` (slow; that is how CI tests it).

Work split: one program per (batch, tile of ``BLOCK_D`` channels).  A tile
never straddles a B/C group, so ``B`` and ``C`` are read once per tile and
shared by its channels.  The program walks the sequence in chunks of
``BLOCK_L`` steps and keeps everything of a chunk in registers as
``(BLOCK_D, BLOCK_N, BLOCK_L)`` tiles:

* forward: ``a_t = exp(delta_t A)``, ``b_t = delta_t B_t u_t``; an associative
  scan along the chunk with ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``
  gives every state from the chunk's incoming one, which is carried in fp32
  registers to the next chunk.  Only per-step factors ``<= 1`` are
  multiplied.  The fp32 state entering every chunk is saved for the backward
  (``Bt * Dm * N * L / BLOCK_L`` floats: activation memory stays O(Bt*Dm*L)).
* backward: chunks in reverse.  Each chunk rebuilds ``h_{t-1}`` with a scan
  of the inputs shifted by one step (no division by ``a_t``), then solves
  ``dh_t = C_t dy_t + a_{t+1} dh_{t+1}`` with a reversed scan seeded by the
  carry from the next chunk.  Gradients of ``B``/``C`` (shared by the
  channels of a group) are reduced over the tile and added atomically in
  fp32; those of ``A``, ``D`` and ``delta_bias`` are written per batch and
  summed afterwards.

All accumulation is fp32; inputs may be fp32, fp16 or bf16.
"""
import torch

from .._triton import HAS_TRITON, check_triton_inputs, tl, triton

_TILE_ELEMS = 4096  # BLOCK_D * BLOCK_N * BLOCK_L per program

if HAS_TRITON:

    @triton.jit
    def _combine(a1, b1, a2, b2):
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _softplus(x):
        # log(1 + e^x) without overflow for large x or precision loss for small x
        return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))

    @triton.jit
    def _pos(t, k, L, H, W, MODE: tl.constexpr):
        """Memory position of sequence step ``t`` of direction ``k``.
        MODE 0 (plain): ``t``.  MODE 1 (SS2D): VMamba's cross-scan over an
        H x W map (0 row-major, 1 column-major, 2 and 3 the same reversed).
        MODE 2 (bidirectional): direction 1 runs from the end."""
        if MODE == 1:
            tt = tl.where(k >= 2, L - 1 - t, t)
            tt = tl.minimum(tl.maximum(tt, 0), L - 1)
            return tl.where(k % 2 == 1, (tt % H) * W + tt // H, tt)
        elif MODE == 2:
            return tl.minimum(tl.maximum(tl.where(k == 1, L - 1 - t, t), 0), L - 1)
        else:
            return t

    @triton.jit
    def _load_delta(delta_ptr, bias, row, t, mask, stride_l, HAS_BIAS: tl.constexpr,
                    SOFTPLUS: tl.constexpr):
        """Raw delta (+ bias) and the delta actually used, masked to 0."""
        raw = tl.load(delta_ptr + row + t * stride_l, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw = raw + bias[:, None]
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw)
        return raw, tl.where(mask, dt, 0.0)

    @triton.jit
    def _tile_params(A_ptr, D_ptr, bias_ptr, d, n, Dm, N, P, s_Ad, s_An, pid_d,
                     BLOCK_D: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                     MODE: tl.constexpr):
        """What both kernels derive for a tile of channels ``d``: masks, the
        group g (the whole tile is in one), the output / u channels, A, D and
        delta_bias.  MODE 1/2: group g is direction g and all directions write
        (add) one (Bt, P, L) output, channel oc; SS2D (1) also reads one
        shared u map (uc = oc)."""
        mask_d = d < Dm
        mask_n = n < N
        g = (pid_d * BLOCK_D) // P
        oc = d
        if MODE != 0:
            oc = d - g * P
        uc = d
        if MODE == 1:
            uc = oc
        A = tl.load(A_ptr + d[:, None] * s_Ad + n[None, :] * s_An,
                    mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        bias = tl.zeros((BLOCK_D, ), tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        Dv = tl.zeros((BLOCK_D, ), tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
        return mask_d, mask_n, g, oc, uc, A, bias, Dv

    @triton.jit
    def _ssm_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, states_ptr, last_ptr,
        Dm, L, N, P, H, W,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_Ad, s_An,
        NC,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr, MODE: tl.constexpr,
    ):
        pid_d = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        j = tl.arange(0, BLOCK_L)
        mask_d, mask_n, g, oc, uc, A, bias, Dv = _tile_params(
            A_ptr, D_ptr, bias_ptr, d, n, Dm, N, P, s_Ad, s_An, pid_d, BLOCK_D, HAS_D, HAS_BIAS,
            MODE)

        u_row = u_ptr + b * s_ub + uc[:, None] * s_ud
        d_row = b * s_db + d[:, None] * s_dd
        B_row = B_ptr + b * s_Bb + g * s_Bg + n[:, None] * s_Bn
        C_row = C_ptr + b * s_Cb + g * s_Cg + n[:, None] * s_Cn
        st_row = states_ptr + ((b * Dm + d[:, None]) * NC) * N + n[None, :]
        h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
        for c in range(0, NC):
            ts = c * BLOCK_L + j
            mask_l = ts < L
            t = _pos(ts, g, L, H, W, MODE)
            m2 = mask_d[:, None] & mask_l[None, :]
            mBC = mask_n[:, None] & mask_l[None, :]
            if SAVE_STATES:
                tl.store(st_row + c * N, h, mask=mask_d[:, None] & mask_n[None, :])
            u = tl.load(u_row + t[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
            _, dt = _load_delta(delta_ptr, bias, d_row, t[None, :], m2, s_dl, HAS_BIAS, SOFTPLUS)
            Bv = tl.load(B_row + t[None, :] * s_Bl, mask=mBC, other=0.0).to(tl.float32)
            Cv = tl.load(C_row + t[None, :] * s_Cl, mask=mBC, other=0.0).to(tl.float32)
            a = tl.exp(dt[:, None, :] * A[:, :, None])             # (BD, BN, BL)
            x = Bv[None, :, :] * (dt * u)[:, None, :]
            acum, hs = tl.associative_scan((a, x), 2, _combine)
            hs = hs + acum * h[:, :, None]
            y = tl.sum(hs * Cv[None, :, :], axis=1)                  # (BD, BL)
            if HAS_D:
                y = y + Dv[:, None] * u
            if HAS_Z:
                zv = tl.load(z_ptr + b * s_zb + oc[:, None] * s_zd + t[None, :] * s_zl,
                             mask=m2, other=0.0).to(tl.float32)
                y = y * zv * tl.sigmoid(zv)
            o_ptrs = out_ptr + b * s_ob + oc[:, None] * s_od + t[None, :] * s_ol
            if MODE != 0:  # the directions add into one fp32 map
                tl.atomic_add(o_ptrs, y, mask=m2)
            else:
                tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=m2)
            last = tl.minimum(L - c * BLOCK_L, BLOCK_L) - 1
            h = tl.sum(tl.where(j[None, None, :] == last, hs, 0.0), axis=2)
        tl.store(last_ptr + (b * Dm + d[:, None]) * N + n[None, :], h,
                 mask=mask_d[:, None] & mask_n[None, :])

    @triton.jit
    def _ssm_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        dout_ptr, states_ptr, dlast_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
        Dm, L, N, P, G, H, W,
        s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
        s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_Ad, s_An,
        NC,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
        SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, MODE: tl.constexpr,
    ):
        pid_d = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        j = tl.arange(0, BLOCK_L)
        mask_d, mask_n, g, oc, uc, A, bias, Dv = _tile_params(
            A_ptr, D_ptr, bias_ptr, d, n, Dm, N, P, s_Ad, s_An, pid_d, BLOCK_D, HAS_D, HAS_BIAS,
            MODE)
        mask_dn = mask_d[:, None] & mask_n[None, :]

        u_off = b * s_ub + uc[:, None] * s_ud  # du shares u's strides
        u_row = u_ptr + u_off
        d_row = b * s_db + d[:, None] * s_dd
        o_row = b * s_ob + oc[:, None] * s_od  # dout, dz (and z's channel)
        B_row = B_ptr + b * s_Bb + g * s_Bg + n[:, None] * s_Bn
        C_row = C_ptr + b * s_Cb + g * s_Cg + n[:, None] * s_Cn
        # dB / dC buffers are contiguous fp32 (Bt, G, N, L)
        dBC_row = ((b * G + g) * N + n[:, None]) * L
        st_row = states_ptr + ((b * Dm + d[:, None]) * NC) * N + n[None, :]

        carry = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)  # a_{t+1} dh_{t+1} across chunks
        if HAS_DLAST:
            carry = tl.load(dlast_ptr + (b * Dm + d[:, None]) * N + n[None, :], mask=mask_dn,
                            other=0.0).to(tl.float32)
        dA_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
        dD_acc = tl.zeros((BLOCK_D, ), tl.float32)
        dbias_acc = tl.zeros((BLOCK_D, ), tl.float32)
        for cc in range(0, NC):
            c = NC - 1 - cc
            ts = c * BLOCK_L + j
            mask_l = ts < L
            t = _pos(ts, g, L, H, W, MODE)
            m2 = mask_d[:, None] & mask_l[None, :]
            mBC = mask_n[:, None] & mask_l[None, :]
            h_in = tl.load(st_row + c * N, mask=mask_dn, other=0.0)

            u = tl.load(u_row + t[None, :] * s_ul, mask=m2, other=0.0).to(tl.float32)
            raw, dt = _load_delta(delta_ptr, bias, d_row, t[None, :], m2, s_dl, HAS_BIAS,
                                  SOFTPLUS)
            Bv = tl.load(B_row + t[None, :] * s_Bl, mask=mBC, other=0.0).to(tl.float32)
            Cv = tl.load(C_row + t[None, :] * s_Cl, mask=mBC, other=0.0).to(tl.float32)
            a = tl.exp(dt[:, None, :] * A[:, :, None])
            x = Bv[None, :, :] * (dt * u)[:, None, :]

            # h_{t-1}: scan of the step before each position (identity at j = 0)
            tp = _pos(ts - 1, g, L, H, W, MODE)
            mp = m2 & (j[None, :] > 0)
            up = tl.load(u_row + tp[None, :] * s_ul, mask=mp, other=0.0).to(tl.float32)
            _, dtp = _load_delta(delta_ptr, bias, d_row, tp[None, :], mp, s_dl, HAS_BIAS,
                                 SOFTPLUS)
            mBCp = mask_n[:, None] & (mask_l & (j > 0))[None, :]
            Bp = tl.load(B_row + tp[None, :] * s_Bl, mask=mBCp, other=0.0).to(tl.float32)
            ap = tl.exp(dtp[:, None, :] * A[:, :, None])
            xp = Bp[None, :, :] * (dtp * up)[:, None, :]
            pcum, h_prev = tl.associative_scan((ap, xp), 2, _combine)
            h_prev = h_prev + pcum * h_in[:, :, None]
            hs = a * h_prev + x                                       # h_t

            dout = tl.load(dout_ptr + o_row + t[None, :] * s_ol, mask=m2,
                           other=0.0).to(tl.float32)
            dy = dout
            if HAS_Z:
                zv = tl.load(z_ptr + b * s_zb + oc[:, None] * s_zd + t[None, :] * s_zl,
                             mask=m2, other=0.0).to(tl.float32)
                sig = tl.sigmoid(zv)
                y = tl.sum(hs * Cv[None, :, :], axis=1)
                if HAS_D:
                    y = y + Dv[:, None] * u
                dz = dout * y * sig * (1.0 + zv * (1.0 - sig))
                if MODE != 0:  # z is shared by the directions: fp32 sum
                    tl.atomic_add(dz_ptr + o_row + t[None, :] * s_ol, dz, mask=m2)
                else:
                    tl.store(dz_ptr + o_row + t[None, :] * s_ol,
                             dz.to(dz_ptr.dtype.element_ty), mask=m2)
                dy = dout * zv * sig
            dy = tl.where(m2, dy, 0.0)

            # dh_t = C_t dy_t + a_{t+1} dh_{t+1}: reversed scan, alpha_t = a_{t+1}
            tn = _pos(ts + 1, g, L, H, W, MODE)
            mn = m2 & (j[None, :] < BLOCK_L - 1) & ((ts + 1)[None, :] < L)
            _, dtn = _load_delta(delta_ptr, bias, d_row, tn[None, :], mn, s_dl, HAS_BIAS,
                                 SOFTPLUS)
            alpha = tl.exp(dtn[:, None, :] * A[:, :, None])          # 1 where masked
            gsrc = Cv[None, :, :] * dy[:, None, :]
            pr, sr = tl.associative_scan((alpha, gsrc), 2, _combine, reverse=True)
            dh = sr + pr * carry[:, :, None]

            # gradients
            dCv = tl.sum(hs * dy[:, None, :], axis=0)                # (BN, BL)
            dxv = dh * (dt * u)[:, None, :]
            dBv = tl.sum(dxv, axis=0)
            tl.atomic_add(dC_ptr + dBC_row + t[None, :], dCv, mask=mBC)
            tl.atomic_add(dB_ptr + dBC_row + t[None, :], dBv, mask=mBC)
            dbu = tl.sum(dh * Bv[None, :, :], axis=1)                # d(dt * u)
            da = dh * h_prev * a                                      # d(dt * A)
            ddt = dbu * u + tl.sum(da * A[:, :, None], axis=1)
            du = dbu * dt
            if HAS_D:
                du = du + dy * Dv[:, None]
                dD_acc += tl.sum(dy * u, axis=1)
            dA_acc += tl.sum(da * dt[:, None, :], axis=2)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(raw)
            ddt = tl.where(m2, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += tl.sum(ddt, axis=1)
            if MODE == 1:  # du: the four directions add into one fp32 map
                tl.atomic_add(du_ptr + u_off + t[None, :] * s_ul, du, mask=m2)
            else:
                tl.store(du_ptr + u_off + t[None, :] * s_ul, du.to(du_ptr.dtype.element_ty),
                         mask=m2)
            tl.store(ddelta_ptr + d_row + t[None, :] * s_dl, ddt.to(ddelta_ptr.dtype.element_ty),
                     mask=m2)
            carry = tl.sum(tl.where(j[None, None, :] == 0, a * dh, 0.0), axis=2)

        tl.store(dA_ptr + (b * Dm + d[:, None]) * N + n[None, :], dA_acc, mask=mask_dn)
        if HAS_D:
            tl.store(dD_ptr + b * Dm + d, dD_acc, mask=mask_d)
        if HAS_BIAS:
            tl.store(dbias_ptr + b * Dm + d, dbias_acc, mask=mask_d)


def _pow2_divisor(p: int) -> int:
    return p & (-p)


def _blocks(Dm: int, N: int, L: int, P: int, tile_elems: int = _TILE_ELEMS):
    """(BLOCK_D, BLOCK_N, BLOCK_L): a chunk of BLOCK_L steps of BLOCK_D
    channels (a power of two dividing the group size P, so a tile never
    straddles two groups) and all N states, about ``tile_elems`` elements."""
    block_n = triton.next_power_of_2(N)
    block_l = min(64, max(16, triton.next_power_of_2(L)))
    block_d = max(1, tile_elems // (block_n * block_l))
    block_d = min(block_d, 64, triton.next_power_of_2(Dm), _pow2_divisor(P))
    return block_d, block_n, block_l


def _same_layout(a, b):
    """Same shape and the same strides in every dimension of size > 1."""
    return a.shape == b.shape and all(
        sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _strides3(t):
    return t.stride(0), t.stride(1), t.stride(2)


PLAIN, SS2D, BIDIR = 0, 1, 2


class SelectiveScanTritonFn(torch.autograd.Function):
    """One Function for the three kernel modes.

    * PLAIN: u/delta/z (Bt, Dm, L), B/C (Bt, G, N, L); out (Bt, Dm, L).
    * SS2D (``hw=(H, W)``): ``u`` is the (Bt, P, H*W) map shared by the
      G = 4 directions; ``delta`` (Bt, 4P, L) and ``B``/``C`` (Bt, 4, N, L)
      are in spatial order per direction.  out: fp32 (Bt, P, L), the sum over
      the directions.
    * BIDIR: u/delta (Bt, 2P, L), B/C (Bt, 2, N, L), all in natural order;
      direction 1 runs from the end.  ``z`` (Bt, P, L) is shared; out
      (Bt, P, L) is the sum of the two gated directions.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_fp32, mode, hw):
        Bt, Dm, L = delta.shape
        G, N = B.shape[1], A.shape[1]
        P = Dm // G
        H, W = hw if hw is not None else (1, L)
        BD, BN, BL = _blocks(Dm, N, L, P)
        NC = triton.cdiv(L, BL)
        save = any(ctx.needs_input_grad[:8])
        if mode == PLAIN:
            out = torch.empty((Bt, Dm, L), device=u.device,
                              dtype=torch.float32 if out_fp32 else u.dtype)
        else:  # the directions add into one fp32 map
            out = torch.zeros((Bt, P, L), device=u.device, dtype=torch.float32)
        states = torch.empty((Bt, Dm, NC, N) if save else (1, ), device=u.device,
                             dtype=torch.float32)
        last = torch.empty((Bt, Dm, N), device=u.device, dtype=torch.float32)
        zz = z if z is not None else out
        _ssm_fwd_kernel[(triton.cdiv(Dm, BD), Bt)](
            u, delta, A, B, C, D if D is not None else A, zz,
            delta_bias if delta_bias is not None else A, out, states, last,
            Dm, L, N, P, H, W, *_strides3(u), *_strides3(delta), *_strides3(zz),
            *_strides3(out), *B.stride(), *C.stride(), *A.stride(), NC,
            BLOCK_D=BD, BLOCK_N=BN, BLOCK_L=BL, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), SAVE_STATES=save,
            MODE=mode)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.delta_softplus = bool(delta_softplus)
            ctx.blocks = (BD, BN, BL, NC)
            ctx.mode, ctx.hw = mode, hw
        if mode == BIDIR and not out_fp32:
            out = out.to(u.dtype)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        mode, hw = ctx.mode, ctx.hw
        Bt, Dm, L = delta.shape
        G, N = B.shape[1], A.shape[1]
        P = Dm // G
        H, W = hw if hw is not None else (1, L)
        _, BN, BL, NC = ctx.blocks
        # the backward keeps about twice as many tiles live: half the channels
        BD = _blocks(Dm, N, L, P, _TILE_ELEMS // 2)[0]
        dev = u.device
        out_shape = (Bt, Dm, L) if mode == PLAIN else (Bt, P, L)
        if dout is None:
            dout = torch.zeros(out_shape, device=dev, dtype=torch.float32)
        dout = dout.contiguous()
        # fp32 buffers where several directions add into one tensor
        du = torch.zeros(u.shape, device=dev, dtype=torch.float32) if mode == SS2D \
            else torch.empty_like(u)
        dz = None
        if z is not None:
            dz = torch.zeros(z.shape, device=dev, dtype=torch.float32) if mode == BIDIR \
                else torch.empty_like(z)
        ddelta = torch.empty_like(delta)
        dB = torch.zeros((Bt, G, N, L), device=dev, dtype=torch.float32)
        dC = torch.zeros((Bt, G, N, L), device=dev, dtype=torch.float32)
        dA = torch.empty((Bt, Dm, N), device=dev, dtype=torch.float32)
        dD = torch.empty((Bt, Dm), device=dev, dtype=torch.float32)
        dbias = torch.empty((Bt, Dm), device=dev, dtype=torch.float32)
        zz = z if z is not None else dout
        # du is addressed with u's strides and dz with dout's (z with its
        # own); the stride of a size-1 dimension is never used (a contiguous
        # dout of batch 1 may carry any, as autograd hands it to Vim)
        assert _same_layout(du, u) and (dz is None or _same_layout(dz, dout))
        _ssm_bwd_kernel[(triton.cdiv(Dm, BD), Bt)](
            u, delta, A, B, C, D if D is not None else A, zz,
            delta_bias if delta_bias is not None else A, dout, states,
            dlast.contiguous() if dlast is not None else A,
            du, ddelta, dz if dz is not None else du, dB, dC, dA, dD, dbias,
            Dm, L, N, P, G, H, W, *_strides3(u), *_strides3(delta), *_strides3(zz),
            *_strides3(dout), *B.stride(), *C.stride(), *A.stride(), NC,
            BLOCK_D=BD, BLOCK_N=BN, BLOCK_L=BL, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.delta_softplus,
            HAS_DLAST=dlast is not None, MODE=mode)
        return (du.to(u.dtype), ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.sum(0).to(D.dtype) if D is not None else None,
                dz.to(z.dtype) if dz is not None else None,
                dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
                None, None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False, out_fp32=False):
    """Triton selective scan; arguments as :func:`selective_scan_naive`."""
    from ._common import check_scan_inputs
    meta = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, out_fp32)
    check_triton_inputs('selective_scan', [('u', u), ('delta', delta), ('A', A), ('B', B),
                                           ('C', C), ('D', D), ('z', z),
                                           ('delta_bias', delta_bias)])
    # u, delta, z and out/du must share the (Bt, Dm, L) layout used for the grads
    u, delta = u.contiguous(), delta.contiguous()
    z = z.contiguous() if z is not None else None
    out, last = SelectiveScanTritonFn.apply(u, delta, A.contiguous(), meta.B.contiguous(),
                                            meta.C.contiguous(), D, z, delta_bias,
                                            bool(delta_softplus), bool(out_fp32), PLAIN, None)
    return (out, last) if return_last_state else out


def ss2d_scan_triton(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Fused VMamba SS2D scan; see :func:`mmvisbackbones.ops.ss2d_scan`."""
    Bt, P, H, W = x.shape
    K, L = B.shape[1], H * W
    check_triton_inputs('ss2d_scan', [('x', x), ('delta', delta), ('A', A), ('B', B), ('C', C),
                                      ('D', D), ('delta_bias', delta_bias)])
    y, _ = SelectiveScanTritonFn.apply(
        x.reshape(Bt, P, L).contiguous(), delta.reshape(Bt, K * P, L).contiguous(),
        A.contiguous(), B.reshape(Bt, K, -1, L).contiguous(), C.reshape(Bt, K, -1, L).contiguous(),
        D, None, delta_bias, bool(delta_softplus), True, SS2D, (H, W))
    return y.view(Bt, P, H, W)


def bidirectional_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=True, out_fp32=False):
    """Fused bidirectional scan; see :func:`mmvisbackbones.ops.bidirectional_scan`."""
    check_triton_inputs('bidirectional_scan', [('u', u), ('delta', delta), ('A', A), ('B', B),
                                               ('C', C), ('D', D), ('z', z),
                                               ('delta_bias', delta_bias)])
    out, _ = SelectiveScanTritonFn.apply(
        u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), D,
        z.contiguous() if z is not None else None, delta_bias, bool(delta_softplus),
        bool(out_fp32), BIDIR, None)
    return out
