"""Activation checkpointing (``set_grad_checkpointing``): the same gradients, optimizer step, stochastic-depth
masks and BatchNorm statistics as without it, the blocks really run twice in training, and only then."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import lrformer
from lrformer.engine.losses import TrainingObjective
from lrformer.engine.sync_bn import convert_sync_batchnorm
from lrformer.models.activation_checkpointing import checkpoint_module
from lrformer.models.lr_head import LRHead

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "num_classes": 3, "drop_path_rate": 0.3}
MODELS = {
    "lrformer": ("lrformer_t", {**TINY, "head_channels": 32}),
    # 21 stage-3 blocks: LRFormer-XL's pre_norm BatchNorms (blocks 7 and 15), tiny dims, an LRHead
    "xl_pre_norm": ("lrformer_xl", {**TINY, "depths": [1, 1, 21, 1], "head_channels": 32}),
    "plus": ("lrformer_t_plus", {**TINY, "feat_channels": 64, "num_queries": 10, "pixel_decoder_layers": 2,
                                 "pixel_decoder_ffn": 128, "transformer_decoder_layers": 2,
                                 "transformer_decoder_ffn": 128, "positional_encoding_num_feats": 32}),
}  # fmt: skip
SIZE = 64


def _batch(num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    return images, torch.randint(0, num_classes, (2, SIZE, SIZE), generator=generator)


def _train_step(model: nn.Module, checkpointing: bool, seed: int = 0) -> tuple[float, dict, dict, dict]:
    """One AdamW step: (loss, gradients, parameters after the step, buffers after the step)."""
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    images, labels = _batch(model.num_classes)
    torch.manual_seed(seed)  # the stochastic-depth draws
    loss, _ = TrainingObjective(model)(images, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return loss.item(), grads, params, {n: b.clone() for n, b in model.named_buffers()}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_checkpointing_gives_the_same_step(kind):
    name, overrides = MODELS[kind]
    torch.manual_seed(0)
    plain = lrformer.create_model(name, **overrides).train()
    checkpointed = copy.deepcopy(plain)
    drop_rates = [m.drop_prob for m in plain.backbone.modules() if hasattr(m, "drop_prob")]
    assert max(drop_rates) > 0.2  # stochastic depth is drawn in the checkpointed blocks

    loss, grads, params, buffers = _train_step(plain, False)
    loss_ckpt, grads_ckpt, params_ckpt, buffers_ckpt = _train_step(checkpointed, True)
    assert loss_ckpt == loss
    assert grads_ckpt.keys() == grads.keys() == {n for n, p in plain.named_parameters()}  # every parameter
    shared = [n for n in grads if ".d_convs" in n]
    assert shared and all(grads[n].abs().max() > 0 for n in shared)  # the stage's shared convs get gradients
    errors = {n: _relative_error(grads[n], grads_ckpt[n]) for n in grads if grads[n].abs().max() > 0}
    assert max(errors.values()) <= 1e-6, max(errors.items(), key=lambda kv: kv[1])
    for n, p in params.items():
        torch.testing.assert_close(params_ckpt[n], p, rtol=1e-6, atol=1e-9, msg=n)

    norms = [n for n, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)]
    checkpointed_norms = {
        "lrformer": ["decode_head.fuse_block1.norm1", "decode_head.fuse_block2.norm2"],
        "xl_pre_norm": ["backbone.block3.7.pre_norm", "backbone.block3.15.pre_norm", "decode_head.fuse_block1.norm2"],
        "plus": [],
    }[kind]
    assert set(checkpointed_norms) <= set(norms)
    for n in norms:
        assert buffers_ckpt[f"{n}.num_batches_tracked"].item() == buffers[f"{n}.num_batches_tracked"].item() == 1
        for stat in ("running_mean", "running_var"):
            assert torch.equal(buffers_ckpt[f"{n}.{stat}"], buffers[f"{n}.{stat}"]), f"{n}.{stat}"
    for n in checkpointed_norms:  # the statistics did move, once
        assert buffers[f"{n}.running_mean"].abs().max() > 0


def test_the_same_seed_is_what_makes_the_gradients_equal():
    """With other stochastic-depth draws the gradients differ, so equal gradients above mean that the
    recomputation drew the same masks."""
    name, overrides = MODELS["lrformer"]
    torch.manual_seed(0)
    model = lrformer.create_model(name, **overrides).train()
    _, grads, _, _ = _train_step(copy.deepcopy(model), True, seed=0)
    _, other, _, _ = _train_step(copy.deepcopy(model), True, seed=5)
    assert max(_relative_error(grads[n], other[n]) for n in grads if grads[n].abs().max() > 0) > 1e-3


def _count_calls(modules: list[nn.Module]) -> tuple[list[int], list]:
    """Forward calls of each module so far (a list that grows), and the hook handles. A pre-hook: the
    recomputation stops once backward has what it needs, before the module's forward returns."""
    counts = [0] * len(modules)
    handles = [
        module.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        for i, module in enumerate(modules)
    ]
    return counts, handles


@pytest.mark.parametrize("kind", ["lrformer", "plus"])
def test_blocks_run_twice_only_when_training_with_checkpointing(kind):
    name, overrides = MODELS[kind]
    model = lrformer.create_model(name, **overrides)
    head = model.decode_head
    watched = [model.backbone.block1[0], model.backbone.block4[0]]
    watched += [head.fuse_block1, head.fuse_block2] if kind == "lrformer" else list(head.pixel_decoder.encoder.layers)
    images, labels = _batch(model.num_classes)

    def calls(train: bool, checkpointing: bool, grad: bool = True) -> list[int]:
        model.train(train).set_grad_checkpointing(checkpointing)
        counts, handles = _count_calls(watched)
        with torch.set_grad_enabled(grad):
            loss, _ = TrainingObjective(model)(images, labels)
            if grad:
                loss.backward()
        for handle in handles:
            handle.remove()
        return counts

    assert model.grad_checkpointing is False and head.grad_checkpointing is False
    assert calls(True, False) == [1] * len(watched)
    assert calls(True, True) == [2] * len(watched)  # forward, then the recomputation in backward
    assert model.grad_checkpointing is True and head.grad_checkpointing is True
    assert model.backbone.grad_checkpointing is True
    assert calls(True, True, grad=False) == [1] * len(watched)  # no autograd: nothing to recompute
    assert calls(False, True) == [1] * len(watched)  # eval mode: plain forward
    model.set_grad_checkpointing(False)
    assert not model.backbone.grad_checkpointing and not head.grad_checkpointing


def _sync_worker(rank: int, port: int, block: nn.Module, x: torch.Tensor, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = []
    for enabled in (False, True):
        synced = convert_sync_batchnorm(copy.deepcopy(block), torch.device("cpu")).train()
        half = x[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)
        checkpoint_module(synced, half, enabled=enabled).square().sum().backward()
        grads = [p.grad.clone() for p in synced.parameters()]
        for grad in grads:  # what DDP does: sum over the processes (then averages)
            dist.all_reduce(grad)
        results.append((half.grad, grads, [b.clone() for b in synced.buffers()]))
    torch.save(results, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_synchronised_batchnorm_in_a_checkpointed_block(tmp_path):
    """A fuse block with CPUSyncBatchNorm in two gloo processes: the recomputation runs the statistics'
    all-reduce again during backward; the result equals the plain run and one BatchNorm over the whole batch."""
    torch.manual_seed(0)
    block = LRHead._fuse_block(32, 8, 32, 4, 1.0)
    x = torch.randn(4, 32, 12, 12)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_sync_worker, args=(port, block, x, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference = copy.deepcopy(block).train()
    full = x.clone().requires_grad_(True)
    reference(full).square().sum().backward()
    for plain, checkpointed in ranks:  # each process: checkpointing changes nothing
        for a, b in zip([plain[0], *plain[1], *plain[2]], [checkpointed[0], *checkpointed[1], *checkpointed[2]],
                        strict=True):  # fmt: skip
            assert torch.equal(a, b)
    for enabled in (0, 1):
        torch.testing.assert_close(torch.cat([ranks[0][enabled][0], ranks[1][enabled][0]]), full.grad)
        for ours, expected in zip(ranks[0][enabled][1], [p.grad for p in reference.parameters()], strict=True):
            assert _relative_error(expected, ours) < 1e-4
        for ours, expected in zip(ranks[0][enabled][2], list(reference.buffers()), strict=True):
            torch.testing.assert_close(ours, expected.to(ours.dtype), rtol=1e-5, atol=1e-6)
