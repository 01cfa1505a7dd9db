"""CPU synchronised BatchNorm: two gloo processes equal one BatchNorm2d over the whole batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lrformer.engine.sync_bn import convert_sync_batchnorm


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
