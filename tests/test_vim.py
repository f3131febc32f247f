"""Vim specifics: upstream parity through the converter, the converter's
handling of the middle class token and the position grid, pretrained loading."""
import os.path as osp

import pytest
import torch

from mmvisbackbones import Vim, build_backbone, convert_vim_checkpoint

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'vim_upstream_test_arch.pth')
FIXTURE_ARCH = dict(embed_dims=32, depth=4, d_state=4, expand=2, drop_path_rate=0.0)


def token_states(net, x):
    tok, hw = net.patch_embed(x)
    tok = net.add_tokens(tok + net.pos_embed)
    states = []
    for stage in net.stages:
        for blk in stage:
            tok = blk(tok)
        states.append(tok)
    return states


def test_upstream_parity():
    """Converted upstream weights give upstream's token states after every
    layer (fixture made by hustvl/Vim's own VisionMamba with its middle class
    token; tools/dev/make_vim_parity_fixture.py)."""
    fx = torch.load(FIXTURE, weights_only=True)
    net = Vim(arch=FIXTURE_ARCH, pretrain_img_size=64, with_cls_token=True).eval()
    sd = convert_vim_checkpoint(fx['model'], net)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected
    # only our new dense-output parts: the pyramid and the first three output
    # norms (upstream's final norm_f became norm3)
    assert all(k.startswith(('fpns.', 'norm0', 'norm1', 'norm2')) for k in missing), missing
    assert torch.equal(net.norm3.weight, fx['model']['norm_f.weight'])
    with torch.no_grad():
        states = token_states(net, fx['input'])
    for ours, ref in zip(states, fx['states']):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_converter_middle_cls_token_and_grid():
    """pos_embed of 4x4 patches + a class token at index 8 (= 16 // 2): the
    class entry goes to cls_pos_embed, the grid keeps the patch order."""
    net = Vim(arch=FIXTURE_ARCH, pretrain_img_size=64, with_cls_token=True)
    grid = torch.arange(16.).view(1, 16, 1).repeat(1, 1, 32)
    cls = torch.full((1, 1, 32), -1.)
    pos = torch.cat([grid[:, :8], cls, grid[:, 8:]], 1)
    out = convert_vim_checkpoint({'pos_embed': pos, 'cls_token': torch.zeros(1, 1, 32),
                                  'head.weight': torch.zeros(10, 32), 'norm_f.weight':
                                  torch.zeros(32), 'layers.3.mixer.D': torch.zeros(64),
                                  'rope.freqs_cos': torch.zeros(1)}, net)
    assert torch.equal(out['pos_embed'], grid)
    assert torch.equal(out['cls_pos_embed'], cls)
    assert set(out) == {'pos_embed', 'cls_pos_embed', 'cls_token', 'stages.3.0.mixer.D',
                        'norm3.weight'}
    # without a class token in the model both class entries are dropped
    net2 = Vim(arch=FIXTURE_ARCH, pretrain_img_size=64)
    out2 = convert_vim_checkpoint({'pos_embed': pos, 'cls_token': torch.zeros(1, 1, 32)}, net2)
    assert set(out2) == {'pos_embed'} and torch.equal(out2['pos_embed'], grid)


def test_converter_resizes_the_grid():
    net = Vim(arch=FIXTURE_ARCH, pretrain_img_size=64)  # 4x4 grid
    pos = torch.randn(1, 14 * 14 + 1, 32)  # a 224 checkpoint with its class token
    out = convert_vim_checkpoint({'pos_embed': pos}, net)
    assert out['pos_embed'].shape == (1, 16, 32)
    with pytest.raises(ValueError, match='square grid'):
        convert_vim_checkpoint({'pos_embed': torch.zeros(1, 15, 32)}, net)


def test_upstream_checkpoint_through_init_cfg(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'vim_t.pth'
    torch.save({'model': fx['model']}, ckpt)
    net = Vim(arch=FIXTURE_ARCH, pretrain_img_size=64, with_cls_token=True,
              init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    with torch.no_grad():
        states = token_states(net.eval(), fx['input'])
    torch.testing.assert_close(states[-1], fx['states'][-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch,upstream_m', [('tiny', 7), ('small', 26), ('base', 98)])
def test_parameter_counts_match_upstream(arch, upstream_m):
    """Upstream reports Vim-Ti 7M, Vim-S 26M, Vim-B 98M (classifier included);
    count the shared trunk + head, without our dense-output pyramid."""
    with torch.device('meta'):
        net = Vim(arch=arch, out_indices=(2, ), with_cls_token=True)
    C = net.embed_dims
    trunk = sum(p.numel() for n, p in net.named_parameters()
                if not n.startswith(('fpns.', 'norm')))
    n = trunk + C * 1000 + 1000 + C  # head + final RMSNorm
    assert round(n / 1e6) == upstream_m, n
    assert Vim.classification_params(arch) == n  # what the README table shows


def test_cls_token_variant_runs_at_odd_sizes():
    net = build_backbone('vim_test', with_cls_token=True).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 65, 97))
    assert [tuple(o.shape[2:]) for o in outs] == [(17, 25), (9, 13), (5, 7), (3, 4)]
