"""ViT-Adapter around our plain backbones (backbones/vit_adapter.py)."""
import os.path as osp

import pytest
import torch

import mmvisbackbones  # noqa: F401
from mmvisbackbones.backbones.vit_adapter import ViTAdapter, convert_vit_adapter_checkpoint

FIXTURE = osp.join(osp.dirname(__file__), 'data', 'vrwkv_adapter_upstream_test_arch.pth')
TINY = dict(conv_inplane=16, n_points=4, deform_num_heads=4, deform_ratio=0.5,
            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], norm='syncbn')


def tiny_vrwkv_adapter(**kw):
    vit = dict(type='VisionRWKV', arch='test', pretrain_img_size=64, drop_path_rate=0.0)
    return ViTAdapter(vit, **{**TINY, **kw})


def test_upstream_parity():
    """Upstream Vision-RWKV's VRWKV_Adapter (fixture by
    tools/dev/make_vrwkv_adapter_parity_fixture.py; mmcv's PyTorch
    deformable attention in both), its detection checkpoint converted: the
    four outputs at 64x64 and 64x96 within 1e-5."""
    fx = torch.load(FIXTURE, weights_only=True)
    net = tiny_vrwkv_adapter()
    missing, unexpected = net.load_state_dict(
        convert_vit_adapter_checkpoint({'state_dict': fx['state_dict']}, net), strict=True)
    assert not missing and not unexpected
    net.eval()
    with torch.no_grad():
        for x, ref in zip(fx['inputs'], fx['outs']):
            outs = net(x)
            assert len(outs) == 4
            for o, r in zip(outs, ref):
                torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('with_cp', [False, True])
def test_outputs_any_size_and_train_step(with_cp):
    torch.manual_seed(0)
    net = tiny_vrwkv_adapter(norm='bn', with_cp=with_cp)
    x = torch.randn(2, 3, 65, 97)
    outs = net(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(17, 25), (9, 13), (5, 7), (3, 4)]
    sum(o.mean() for o in outs).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    a = tiny_vrwkv_adapter(norm='ln2d')
    b = tiny_vrwkv_adapter(norm='ln2d', with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    w = [torch.randn(o.shape) for o in a(x)]
    for net in (a, b):
        sum((o * wi).sum() for o, wi in zip(net(x), w)).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_builds_from_a_config_and_checks_input():
    from mmengine.registry import MODELS
    net = MODELS.build(dict(type='ViTAdapter', backbone=dict(type='VisionRWKV', arch='test'),
                            **TINY))
    with pytest.raises(ValueError, match='H and W >= 32'):
        net(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match='out_indices'):
        tiny_vrwkv_adapter(out_indices=(0, 4))
    with pytest.raises(TypeError, match="unknown argument 'deform_head'"):
        tiny_vrwkv_adapter(deform_head=4)


def test_layer_ids_for_lr_decay():
    net = tiny_vrwkv_adapter()
    assert net.layer_id('vit.stages.1.0.att.key.weight') == 2
    assert net.layer_id('vit.patch_embed.proj.weight') == 0
    assert net.layer_id('interactions.0.injector.gamma') == net.num_layers + 1


@pytest.mark.parametrize('kw,err,msg', [
    (dict(interaction_indexes=[[0, 1], [3, 3]]), ValueError, 'covering blocks 0..3'),
    (dict(norm='gn'), ValueError, "norm must be one of"),
    (dict(deform_ratio=0.3), ValueError, 'must be divisible by 4 heads'),
])
def test_bad_config(kw, err, msg):
    with pytest.raises(err, match=msg):
        tiny_vrwkv_adapter(**kw)


def test_refuses_non_plain_backbone():
    with pytest.raises(TypeError, match='must be a plain backbone'):
        ViTAdapter(dict(type='Swin', arch='test'), interaction_indexes=[[0, 1]])


def test_converter_names_unknown_keys():
    fx = torch.load(FIXTURE, weights_only=True)
    sd = dict(fx['state_dict'], **{'backbone.mystery.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='mystery'):
        convert_vit_adapter_checkpoint({'state_dict': sd}, tiny_vrwkv_adapter())


def test_loads_upstream_checkpoint_through_init_cfg_for_any_outputs(tmp_path):
    """init_cfg Pretrained with upstream's detector checkpoint: every
    out_indices subset returns upstream's outputs for those strides (without
    output 0 the stride-4 branch is neither built nor loaded)."""
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'adapter.pth'
    torch.save({'state_dict': dict(fx['state_dict'], **{'neck.lateral.weight': torch.ones(1)}),
                'meta': {}}, ckpt)
    for out_indices in ((0, 1, 2, 3), (1, 3), (2, )):
        net = tiny_vrwkv_adapter(out_indices=out_indices,
                                 init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
        net.init_weights()
        assert (net.up is None) == (0 not in out_indices)
        with torch.no_grad():
            outs = net.eval()(fx['inputs'][1])
        assert isinstance(outs, tuple) and len(outs) == len(out_indices)
        for o, i in zip(outs, out_indices):
            torch.testing.assert_close(o, fx['outs'][1][i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('out_indices', [(0, ), (2, ), (1, 2, 3), (0, 1, 2, 3)])
def test_every_trainable_parameter_gets_a_gradient(out_indices):
    net = tiny_vrwkv_adapter(norm='bn', out_indices=out_indices).train()
    outs = net(torch.randn(1, 3, 64, 64))
    assert net.out_strides == [[4, 8, 16, 32][i] for i in out_indices]
    sum(o.mean() for o in outs).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]


def test_frozen_stages_and_norm_eval():
    net = tiny_vrwkv_adapter(norm='bn', frozen_stages=2, norm_eval=True).train()
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in net.named_parameters()
                      if n.startswith(('vit.patch_embed.', 'vit.pos_embed', 'vit.stages.0.',
                                       'vit.stages.1.'))}
    assert frozen and not any(n.startswith(('spm.', 'interactions.')) for n in frozen)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert net.patch_embed is net.vit.patch_embed and net.stages is net.vit.stages


def test_state_dict_has_no_duplicate_keys():
    net = tiny_vrwkv_adapter()
    keys = list(net.state_dict())
    assert not any(k.startswith(('patch_embed.', 'stages.')) for k in keys)
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize('kind', ['maskrcnn', 'upernet', 'dino'])
def test_one_training_iteration_in_each_consumer(kind, data_root):
    """type='ViTAdapter' inside Mask R-CNN, UperNet and DINO (mmdet / mmseg
    scopes): a finite loss whose gradients reach the adapter and the plain
    blocks, then a prediction."""
    from mm_helpers import demo_cfg, one_iteration_and_prediction, set_channels
    cfg = demo_cfg(kind, data_root)
    out_indices = (1, 2, 3) if kind == 'dino' else (0, 1, 2, 3)
    cfg.model.backbone = dict(type='ViTAdapter', out_indices=out_indices,
                              backbone=dict(type='VisionRWKV', arch='test'), **dict(TINY, norm='bn'))
    set_channels(cfg, kind, [32] * len(out_indices))
    model = one_iteration_and_prediction(cfg, kind)
    assert type(model.backbone).__name__ == 'ViTAdapter'


def test_onnx_export_dynamic(tmp_path):
    """Exported with dynamic batch / height / width at 64x64 (the traced
    deformable attention takes its level sizes from the graph, where mmcv's
    CPU path would freeze them), verified by onnxruntime against PyTorch
    there and at 2x3x57x81 (padded to 64x96 inside)."""
    pytest.importorskip('onnxruntime')
    from mmvisbackbones.deploy.onnx import export_backbone
    net = tiny_vrwkv_adapter(norm='bn').eval()
    report = export_backbone(net, str(tmp_path / 'adapter.onnx'), input_shape=(1, 3, 64, 64),
                             dynamic=True, second_shape=(2, 3, 57, 81))
    assert report.ok and report.dynamic


# --------------------------------------------- the registered VisionRWKVAdapter
def test_vision_rwkv_adapter_is_upstream_vrwkv_adapter(tmp_path):
    """``type='VisionRWKVAdapter', arch='test'`` is the fixture's model:
    upstream's VRWKV_Adapter detection checkpoint loads through init_cfg and
    gives its four outputs within 1e-5."""
    from mmvisbackbones import VisionRWKVAdapter
    fx = torch.load(FIXTURE, weights_only=True)
    ckpt = tmp_path / 'vrwkv_adapter_det.pth'
    torch.save({'state_dict': fx['state_dict']}, ckpt)
    net = VisionRWKVAdapter(arch='test', pretrain_img_size=64, drop_path_rate=0.0,
                            init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    net.init_weights()
    net.eval()
    with torch.no_grad():
        for x, ref in zip(fx['inputs'], fx['outs']):
            for o, r in zip(net(x), ref):
                torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('arch', ['tiny', 'small'])
def test_vision_rwkv_adapter_parameter_counts(arch):
    """The paper's COCO table: VRWKV-T 8.4M, VRWKV-S 29.3M backbone
    parameters (the plain model with its adapter)."""
    from mmvisbackbones import VisionRWKVAdapter
    with torch.device('meta'):
        net = VisionRWKVAdapter(arch=arch)
    n = sum(p.numel() for p in net.parameters())
    assert f'{n / 1e6:.1f}M' == VisionRWKVAdapter.upstream_params[arch]
    assert net.out_channels == [VisionRWKVAdapter.arch_zoo[arch]['embed_dims']] * 4


def test_vision_rwkv_adapter_classification_checkpoint(tmp_path):
    """A classification checkpoint of the plain model loads through
    ``backbone_init_cfg`` (the adapter keeps its init); given as the
    adapter's ``init_cfg`` it is an error that says where it goes."""
    from mmvisbackbones import VisionRWKVAdapter
    from mmvisbackbones.backbones.vit_adapter import split_adapter_arch
    plain, _ = split_adapter_arch(VisionRWKVAdapter.arch_zoo['test'])
    src = mmvisbackbones.VisionRWKV(arch=plain)
    ckpt = tmp_path / 'vrwkv_cls.pth'
    torch.save({'state_dict': src.state_dict()}, ckpt)
    cfg = dict(type='Pretrained', checkpoint=str(ckpt))
    net = VisionRWKVAdapter(arch='test', norm='bn', backbone_init_cfg=cfg)
    spm = {k: v.clone() for k, v in net.spm.state_dict().items()}
    net.init_weights()
    for k, v in net.vit.state_dict().items():
        torch.testing.assert_close(v, src.state_dict()[k], rtol=0, atol=0, msg=k)
    assert all(torch.equal(v, net.spm.state_dict()[k]) for k, v in spm.items())
    with pytest.raises(ValueError, match='classification checkpoint.*backbone_init_cfg'):
        VisionRWKVAdapter(arch='test', norm='bn', init_cfg=cfg).init_weights()


@pytest.mark.parametrize('version,ok', [('12.1', True), ('not available', False)])
def test_cuda_kernel_only_where_mmcv_has_its_cuda_ops(version, ok, monkeypatch):
    """An mmcv built without CUDA (as on a CPU machine) has no deformable
    attention kernel: the adapter then says so once and computes the same
    attention by grid_sample on the GPU."""
    import warnings

    import mmcv.ops
    from mmvisbackbones.backbones import vit_adapter
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: version)
    monkeypatch.setattr(vit_adapter, '_CUDA_OPS', {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert vit_adapter.mmcv_has_cuda_ops() is ok
        assert vit_adapter.mmcv_has_cuda_ops() is ok  # asked once
    said = [w for w in caught if 'built without its CUDA ops' in str(w.message)]
    assert len(said) == (0 if ok else 1)
