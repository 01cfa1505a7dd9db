"""CPU synchronised BatchNorm: two gloo processes equal one BatchNorm2d over the whole batch; the
official scope (decode head only)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import lrformer
from lrformer.engine.sync_bn import CPUSyncBatchNorm, convert_sync_batchnorm, synchronise_batchnorm


def _worker(rank: int, port: int, x: torch.Tensor, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))[0]
    half = x[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)
    y = bn(half)
    (y * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = bn(half.detach() + 20)
    torch.save((y.detach(), half.grad, *stats, y16.float()), f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_equals_full_batch_batchnorm(tmp_path):
    x = torch.randn(4, 3, 5, 6) * 2 + 1
    mp.spawn(_worker, args=(29561, x, str(tmp_path)), nprocs=2, join=True)
    results = {r: torch.load(tmp_path / f"rank{r}.pt") for r in range(2)}
    reference = nn.BatchNorm2d(3)
    full = x.clone().requires_grad_(True)
    y = reference(full)
    (y * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    torch.testing.assert_close(torch.cat([results[0][0], results[1][0]]), y.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), full.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][2], reference.running_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][3], reference.running_var, atol=1e-5, rtol=0)
    shifted = nn.BatchNorm2d(3)(x + 20)  # statistics stay float32 under bf16 autocast
    torch.testing.assert_close(torch.cat([results[0][4], results[1][4]]), shifted.detach(), atol=2e-2, rtol=0)


def test_only_the_decode_head_is_synchronised():
    """The official configs: SyncBN in the head's norm_cfg, plain BatchNorm2d in the backbone."""
    model = lrformer.create_model(
        "lrformer_t", num_classes=3, embed_dims=[16, 32, 80, 64], depths=[1, 1, 21, 1], head_channels=32
    )  # 21 stage-3 blocks: XL's pre_norm BatchNorms exist
    state = {k: v.clone() for k, v in model.state_dict().items()}
    synchronise_batchnorm(model, torch.device("cpu"))  # default scope: decode_head
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert {n for n, t in kinds.items() if t is nn.BatchNorm2d} == {
        "backbone.patch_embed1.conv1.1", "backbone.patch_embed1.conv1.4", "backbone.patch_embed1.conv1.7",
        "backbone.block3.7.pre_norm", "backbone.block3.15.pre_norm",
    }  # fmt: skip
    synced = {n for n, t in kinds.items() if t is CPUSyncBatchNorm}
    assert synced == {n for n in kinds if n.startswith("decode_head.")} and len(synced) == 6  # squeeze1/2 + 2×2 norms
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # weights and names kept
    assert all(type(m) is CPUSyncBatchNorm for m in synchronise_batchnorm(model, torch.device("cpu"), "all").modules()
               if isinstance(m, nn.BatchNorm2d))  # fmt: skip
    with pytest.raises(ValueError, match="train.sync_bn must be one of decode_head, all, none, got 'head'"):
        synchronise_batchnorm(model, torch.device("cpu"), "head")
