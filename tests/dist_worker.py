"""One rank of the distributed tests (tests/test_distributed.py), started by
torchrun with the gloo backend: every rank runs this file, rank 0 writes the
results as JSON.

    torchrun --standalone --nproc_per_node=2 tests/dist_worker.py MODE DATA_ROOT OUT_JSON

MODE:
* ``consumers``: Mask R-CNN with every zoo backbone, UperNet and DINO with
  one each, wrapped in mmengine's ``MMDistributedDataParallel`` with
  ``find_unused_parameters=False`` (its default), a few ``train_step``s;
* ``subsets``: every backbone alone at out_indices subsets (the stages after
  the last output are never run);
* ``equivalence``: one SGD step of 2 ranks x batch 2 against one process x
  batch 4 on the same 4 images.

After the steps, every parameter is compared between the ranks bit for bit.
"""
import copy
import gc
import json
import os
import os.path as osp
import sys
import traceback

import torch
import torch.distributed as dist

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, osp.dirname(HERE))

ITERS = 3  # DDP reports a parameter without gradient at the next forward
SUBSETS = [(2, ), (0, 2), (1, 2, 3)]


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def identical_on_all_ranks(module) -> bool:
    mine = flat_params(module)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def ddp(module):
    from mmengine.model import MMDistributedDataParallel
    return MMDistributedDataParallel(module=module, device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=False)


def run_consumer(kind, backbone, data_root):
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    from mm_helpers import batches, build_in_scope, demo_cfg
    from mmengine.model import revert_sync_batchnorm
    cfg = demo_cfg(kind, data_root, backbone=backbone)
    torch.manual_seed(0)
    model = build_in_scope(cfg, kind)
    model.init_weights()
    # mmseg's UperNet heads are SyncBN, which needs GPUs; on CPUs they are
    # BN, as norm_cfg=dict(type='BN') in the config would build them
    model = revert_sync_batchnorm(model)
    net = ddp(model)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    loader = Runner.build_dataloader(cfg.train_dataloader)
    losses, seen = [], []
    for batch in batches(loader, ITERS):
        seen += [s.img_path if hasattr(s, 'img_path') else s.metainfo.get('img_path')
                 for s in batch['data_samples']]
        log = net.train_step(batch, optim_wrapper=optim)
        losses.append(float(log['loss']))
    seen_by_rank = [None] * dist.get_world_size()
    dist.all_gather_object(seen_by_rank, sorted(set(seen[:2])))  # the first batch
    sampler = getattr(loader.batch_sampler, 'sampler', loader.sampler)
    return {'losses': losses, 'identical': identical_on_all_ranks(model),
            'samples_per_rank': len(sampler), 'dataset_size': len(loader.dataset),
            'first_batch_by_rank': seen_by_rank}


def run_subset(backbone, out_indices):
    from zoo import ZOO
    from mmvisbackbones import BACKBONES
    torch.manual_seed(0)
    model = BACKBONES[backbone](**ZOO[backbone]['kwargs'], out_indices=out_indices)
    net = ddp(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(ITERS):
        x = torch.randn(2, 3, 64, 64, generator=g)
        opt.zero_grad()
        sum(o.mean() for o in net(x)).backward()
        opt.step()
    return {'identical': identical_on_all_ranks(model)}


def per_sample_loss(outs):
    """Mean over the batch of a per-sample loss: what DDP's gradient average
    over equal shards keeps equal to the whole batch's."""
    return sum(o.pow(2).mean(dim=(1, 2, 3)) for o in outs).mean()


def run_equivalence():
    from mmvisbackbones import BACKBONES
    torch.manual_seed(0)
    model = BACKBONES['VMamba'](arch='test', drop_path_rate=0.0)
    reference = copy.deepcopy(model)  # the single-process run, same weights
    before = flat_params(model).clone()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = x[rank * 2:(rank + 1) * 2]
    net = ddp(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    per_sample_loss(net(shard)).backward()
    opt.step()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    per_sample_loss(reference(x)).backward()
    ref_opt.step()
    got, ref = flat_params(model), flat_params(reference)
    diff = (got - ref).abs()
    return {'world': world, 'max_abs_diff': float(diff.max()),
            'max_update': float((ref - before).abs().max()),
            'allclose': bool(torch.allclose(got, ref, rtol=1e-5, atol=1e-6)),
            'identical': identical_on_all_ranks(model)}


def main():
    mode, data_root, out = sys.argv[1:4]
    dist.init_process_group('gloo')
    torch.set_num_threads(1)
    results = {}
    if mode == 'consumers':
        from zoo import ZOO
        jobs = [('maskrcnn', b) for b in sorted(ZOO)] + [('upernet', 'Swin'), ('dino', 'VMamba')]
        for kind, backbone in jobs:
            try:
                results[f'{kind}/{backbone}'] = run_consumer(kind, backbone, data_root)
            except Exception as e:  # noqa: BLE001 - every job reported, then the test fails
                results[f'{kind}/{backbone}'] = {'error': f'{type(e).__name__}: {e}'[:2000],
                                                 'trace': traceback.format_exc()[-3000:]}
    elif mode == 'subsets':
        from zoo import ZOO
        for backbone in sorted(ZOO):
            for oi in SUBSETS:
                try:
                    results[f'{backbone}{oi}'] = run_subset(backbone, oi)
                except Exception as e:  # noqa: BLE001
                    results[f'{backbone}{oi}'] = {'error': f'{type(e).__name__}: {e}'[:2000]}
    elif mode == 'equivalence':
        results['VMamba'] = run_equivalence()
    else:
        raise SystemExit(f'unknown mode {mode!r}')
    if dist.get_rank() == 0:
        results['_world_size'] = dist.get_world_size()
        with open(out, 'w') as f:
            json.dump(results, f, indent=1)
    gc.collect()  # DDP wrappers in reference cycles hold the group: free them first
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    main()
