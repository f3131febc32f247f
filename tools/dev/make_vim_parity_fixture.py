"""Regenerate the Vim parity fixture from upstream hustvl/Vim code (never copied here).

    python tools/dev/make_vim_parity_fixture.py --vim-repo /path/to/Vim

Builds upstream VisionMamba (bimamba v2, middle class token, 4 layers, embed 32,
d_state 4, 64x64 input), perturbs its weights, and saves its state dict, the input
and the token state after every layer.  Upstream imports that need CUDA or
unrelated packages (timm, transformers, mamba_ssm CUDA ops, the Triton RMSNorm)
are replaced by stand-ins; the bidirectional mixer runs upstream Mamba.forward
with mamba_inner_fn_no_out_proj composed from upstream selective_scan_ref and a
causal torch conv (as upstream mamba_inner_ref).  Also prints the parity of our
converter + model against those states.
"""
import sys, types, math
import torch, torch.nn as nn, torch.nn.functional as F
import argparse
p = argparse.ArgumentParser(description="Regenerate tests/data/vim_upstream_test_arch.pth from a hustvl/Vim checkout (needs einops importable).")
p.add_argument("--vim-repo", required=True)
p.add_argument("--out", default="tests/data/vim_upstream_test_arch.pth")
args = p.parse_args()
sys.path[:0] = [args.vim_repo + "/vim", args.vim_repo + "/mamba-1p1p1"]
def mod(name, **attrs):
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m; return m
class DropPath(nn.Module):
    def __init__(self, p=0.): super().__init__()
    def forward(self, x): return x
mod('timm'); mod('timm.models'); mod('timm.models.registry', register_model=lambda f: f)
mod('timm.models.vision_transformer', VisionTransformer=object, _cfg=lambda **k: {}, _load_weights=None)
mod('timm.models.layers', trunc_normal_=lambda t, std=1.: nn.init.trunc_normal_(t, std=std), lecun_normal_=lambda t: nn.init.normal_(t), DropPath=DropPath, to_2tuple=lambda x: (x, x) if not isinstance(x, tuple) else x)
mod('transformers'); mod('transformers.generation', GreedySearchDecoderOnlyOutput=None, SampleDecoderOnlyOutput=None, TextStreamer=None)
mod('transformers.utils', WEIGHTS_NAME='', CONFIG_NAME=''); mod('transformers.utils.hub', cached_file=None)
mod('selective_scan_cuda'); mod('causal_conv1d_cuda'); mod('causal_conv1d', causal_conv1d_fn=None, causal_conv1d_update=None)
class RMSNorm(nn.Module):  # mamba_ssm's RMSNorm semantics (weight only), in torch
    def __init__(self, hidden_size, eps=1e-5, device=None, dtype=None):
        super().__init__(); self.eps = eps; self.weight = nn.Parameter(torch.ones(hidden_size)); self.register_parameter('bias', None)
    def forward(self, x):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)
mod('mamba_ssm.ops.triton.layer_norm', RMSNorm=RMSNorm, layer_norm_fn=None, rms_norm_fn=None)
import mamba_ssm.ops.selective_scan_interface as ssi
def inner_no_out_proj(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B=None, C=None, D=None, delta_bias=None, delta_softplus=True, **kw):
    # upstream mamba_inner_ref minus out_proj, with a torch causal conv and upstream's selective_scan_ref
    L = xz.shape[-1]; R = delta_proj_weight.shape[1]; N = A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=conv1d_weight.shape[-1] - 1, groups=x.shape[1])[..., :L])
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), x_proj_weight)
    delta = (delta_proj_weight @ x_dbl[:, :R].t()).view(x.shape[1], xz.shape[0], L).permute(1, 0, 2)
    Bm = x_dbl[:, R:R + N].view(xz.shape[0], L, N).transpose(1, 2).contiguous()
    Cm = x_dbl[:, -N:].view(xz.shape[0], L, N).transpose(1, 2).contiguous()
    return ssi.selective_scan_ref(x, delta, A, Bm, Cm, D, z=z, delta_bias=delta_bias, delta_softplus=True)
import mamba_ssm.modules.mamba_simple as ms
ms.mamba_inner_fn_no_out_proj = inner_no_out_proj
import models_mamba as up
from mmvisbackbones import Vim, convert_vim_checkpoint

torch.manual_seed(0)
D_, depth, N = 32, 4, 4
ref = up.VisionMamba(img_size=64, patch_size=16, depth=depth, embed_dim=D_, d_state=N, rms_norm=True, residual_in_fp32=True,
                     fused_add_norm=False, final_pool_type='mean', if_abs_pos_embed=True, if_rope=False, bimamba_type='v2',
                     if_cls_token=True, if_divide_out=True, use_middle_cls_token=True, drop_path_rate=0.0, num_classes=10).eval()
with torch.no_grad():
    for p in ref.parameters(): p.add_(0.05 * torch.randn_like(p))
x = torch.randn(2, 3, 64, 64)
# upstream token states after every layer (residual + mixer output)
with torch.no_grad():
    t = ref.patch_embed(x); M = t.shape[1]; pos = M // 2
    t = torch.cat([t[:, :pos], ref.cls_token.expand(2, -1, -1), t[:, pos:]], 1) + ref.pos_embed
    hidden, residual, states = t, None, []
    for layer in ref.layers:
        hidden, residual = layer(hidden, residual)
        states.append((residual + hidden).clone())
ours = Vim(arch=dict(embed_dims=D_, depth=depth, d_state=N, expand=2, drop_path_rate=0.0), pretrain_img_size=64, with_cls_token=True).eval()
sd = convert_vim_checkpoint(ref.state_dict(), ours)
missing, unexpected = ours.load_state_dict(sd, strict=False)
print('missing', missing, 'unexpected', unexpected)
with torch.no_grad():
    tok, hw = ours.patch_embed(x)
    tok = ours.add_tokens(tok + ours.pos_embed)
    for i, stage in enumerate(ours.stages):
        for blk in stage:
            tok = blk(tok)
        print(i, 'max abs diff', (tok - states[i]).abs().max().item(), 'scale', states[i].abs().max().item())
torch.save({'model': ref.state_dict(), 'input': x, 'states': states,
            'note': 'hustvl/Vim VisionMamba bimamba v2, embed 32, depth 4, d_state 4, img 64, middle cls token, perturbed weights; token states (residual + mixer output) after each layer'},
           args.out)
print('wrote', args.out)
