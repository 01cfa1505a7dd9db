"""Activation checkpointing of one block at a time (timm's ``set_grad_checkpointing`` API).

A checkpointed block keeps only its inputs during the forward pass and runs its forward a second
time during the backward pass to rebuild what its backward needs: less activation memory for one
more forward pass per step. :func:`checkpoint_module` is the one place that does it; the backbone
(``LRFormer``: every block), the LRHead (its two fuse blocks) and the Mask2Former pixel decoder
(every deformable encoder layer) call it from their forward when ``grad_checkpointing`` is set.

Checkpointing is exact:

- **Gradients** are those of the plain forward, also for parameters a block uses without owning
  them (the stage's shared ``d_convs`` the backbone passes to every block): PyTorch's
  non-reentrant checkpoint records the recomputed graph like any other, so their gradients
  accumulate over the blocks as usual.
- **Random draws** (stochastic depth, dropout) repeat in the recomputation: the CPU and device RNG
  states are restored before it and put back after it, so the masks are the same and the draws
  after the step are those of a run without checkpointing.
- **BatchNorm statistics** (the LRHead fuse blocks' ``norm1``/``norm2``, LRFormer-XL's
  ``pre_norm``) are updated once per step: the recomputation runs the BatchNorms in training mode
  again, which would update ``running_mean``/``running_var``/``num_batches_tracked`` a second
  time, so the buffers of the block's BatchNorms are saved when the recomputation starts and
  written back when it ends (also when PyTorch stops it early, once the tensors backward needs
  exist). Training-mode BatchNorm normalises with the batch's own statistics, so its recomputed
  output equals the first one whatever the buffers hold.
- **SyncBatchNorm** (``torch.nn.SyncBatchNorm`` on CUDA, ``CPUSyncBatchNorm`` on CPU, which the
  trainer puts in the decode head under DDP) computes its statistics with a collective
  (all-gather / all-reduce) in the forward pass, so the recomputation runs that collective again,
  during the backward pass. Every process recomputes the same blocks in the same order (the
  backward graphs are identical; early stopping, too, stops after the same number of saved
  tensors everywhere), so the collectives pair up across processes, and the inputs being the same
  as in the forward pass, they return the same statistics: the outputs and gradients are those of
  the run without checkpointing, and the running statistics are restored as above. The cost is one
  more small collective per synchronised BatchNorm and step.

Under ``torch.compile`` the checkpointed region is traced as a whole and its recomputation is
planned by the compiler, which applies buffer mutations once; the buffer restoring context is
then left out (``torch.compile`` only accepts dispatch modes as checkpoint contexts).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_BatchNorm = nn.modules.batchnorm._BatchNorm


def checkpoint_module(module: nn.Module, *args: Any, enabled: bool = True) -> Any:
    """``module(*args)``, checkpointed when ``enabled`` and training with autograd on.

    Outside training (``module.eval()``), under ``torch.no_grad`` / ``torch.inference_mode`` or
    with ``enabled=False`` this is a plain call: inference, the fast path and export are unchanged.
    Otherwise the call goes through ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``
    with the RNG state preserved and, when ``module`` holds BatchNorms in training mode, a
    recomputation context that keeps their running statistics from being updated twice (see the
    module docstring).

    Args:
        module: the block; its forward is run twice per training step when checkpointed.
        *args: its inputs (tensors and anything else, e.g. the backbone's shared ``d_convs``).
        enabled: the owner's ``grad_checkpointing`` flag.

    Returns:
        what ``module(*args)`` returns.
    """
    if not (enabled and module.training and torch.is_grad_enabled()):
        return module(*args)
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if norms and not torch.compiler.is_compiling():
        return checkpoint(module, *args, use_reentrant=False, context_fn=partial(_keep_running_stats_contexts, norms))
    return checkpoint(module, *args, use_reentrant=False)  # no context_fn: torch.compile takes none but its own


def _keep_running_stats_contexts(norms: list[nn.Module]) -> tuple[contextlib.AbstractContextManager, ...]:
    """``(forward context, recomputation context)`` for ``checkpoint``'s ``context_fn``."""
    return contextlib.nullcontext(), _restore_buffers_on_exit(norms)


@contextlib.contextmanager
def _restore_buffers_on_exit(modules: list[nn.Module]) -> Iterator[None]:
    """Put the buffers of ``modules`` back to their values at entry when the block exits (normally,
    or by checkpoint's early-stopping exception)."""
    saved = [(buffer, buffer.clone()) for m in modules for buffer in m.buffers(recurse=False) if buffer is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
