"""The LRFormer backbone: a convolutional stem and four stages at strides 4/8/16/32.

It also serves as a feature extractor for other frameworks (timm's ``features_only`` API):
``out_indices`` picks the stages whose features ``forward`` returns, the stages after the last one
are not built, and ``feature_info`` describes the outputs (channels, stride, module name).

Design notes: ``docs/design.md``, section 3 (backbone and blocks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceABC
from functools import partial
from numbers import Integral
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ConfigError, InputError
from .activation_checkpointing import checkpoint_module
from .block import LRBlock
from .layers import LayerNorm2d, ResidualDepthwiseConv
from .lrsa import LRSA

MIN_INPUT_SIZE = 32
XL_PRE_NORM_BLOCKS = (7, 15)
"""Stage-3 blocks that carry the extra ``pre_norm`` BatchNorm when stage 3 has more than 20 blocks (LRFormer-XL)."""
STRIDES = (4, 8, 16, 32)
"""Reduction of the input size at the end of each stage (the feature of stage index ``i``)."""


def check_input(x: torch.Tensor, channels: int = 3) -> None:
    """Raise a clear error for inputs the network cannot take (``channels``: the backbone's ``in_chans``)."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise InputError(
            f"LRFormer expects a (B, {channels}, H, W) image batch, got shape {tuple(x.shape)}; "
            f"add a batch dimension with x[None] or convert the image to {channels} channels."
        )
    if min(x.shape[-2:]) < MIN_INPUT_SIZE:
        raise InputError(
            f"input {tuple(x.shape[-2:])} is too small: LRFormer needs H, W >= {MIN_INPUT_SIZE} "
            "(four stride-2 stages); resize or pad the image first."
        )


def resolve_out_indices(out_indices: Sequence[int] | None, num_stages: int = len(STRIDES)) -> tuple[int, ...]:
    """Validate stage indices and make them non-negative, keeping their order.

    Args:
        out_indices: 0-based stage indices into the strides ``(4, 8, 16, 32)``; negative ones count
            from the last stage as in timm (``-1`` is stride 32). ``None``: all stages.

    Returns:
        the indices in ``0..num_stages-1``, in the given order.

    Raises:
        ConfigError: (one line, naming the fix) for a non-sequence, an empty tuple, an index out of
            range or a stage named twice (``(3, -1)`` included).
    """
    if out_indices is None:
        return tuple(range(num_stages))
    valid = f"{-num_stages}..{num_stages - 1}"
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, SequenceABC):
        raise ConfigError(
            f"out_indices must be a tuple of stage indices ({valid}, -1 = last), got {out_indices!r}: "
            "pass e.g. out_indices=(1, 2, 3) for the stride-8/16/32 features"
        )
    if not out_indices:
        raise ConfigError(
            "out_indices is empty: name at least one stage, e.g. out_indices=(3,) for the stride-32 feature"
        )
    resolved: list[int] = []
    for index in out_indices:
        if not isinstance(index, Integral) or isinstance(index, bool) or not -num_stages <= index < num_stages:
            raise ConfigError(
                f"out_indices {tuple(out_indices)} has {index!r}, but LRFormer has {num_stages} stages "
                f"(0..{num_stages - 1} at strides {', '.join(map(str, STRIDES[:num_stages]))}; -1 = last): "
                f"use integers in {valid}"
            )
        stage = int(index) % num_stages
        if stage in resolved:
            raise ConfigError(
                f"out_indices {tuple(out_indices)} names stage {stage} twice: give each stage once, "
                "e.g. out_indices=(1, 2, 3)"
            )
        resolved.append(stage)
    return tuple(resolved)


class FeatureInfo(SequenceABC):
    """What a feature backbone returns, one dict per output in ``forward`` order (timm's ``FeatureInfo`` API).

    Each entry is ``{"num_chs": C, "reduction": stride, "module": "block{s}", "index": i}``: the
    output of stage index ``i`` (0-based) is ``(B, C, ⌈H/stride⌉, ⌈W/stride⌉)`` and is produced by
    the last block of ``block{i+1}``.

    Example::

        >>> model = lrformer.create_model("lrformer_t", features_only=True, out_indices=(1, 2, 3))
        >>> model.feature_info.channels(), model.feature_info.reduction()
        ([96, 240, 384], [8, 16, 32])
    """

    def __init__(self, info: Sequence[dict[str, Any]]) -> None:
        self._info = [dict(entry) for entry in info]

    def __getitem__(self, idx):  # type: ignore[override]
        return self._info[idx]

    def __len__(self) -> int:
        return len(self._info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self._info})"

    @property
    def out_indices(self) -> tuple[int, ...]:
        """The stage indices of the outputs."""
        return tuple(entry["index"] for entry in self._info)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of every output (a list), of the output at position ``idx`` (a value), or of several positions."""
        if idx is None:
            return [entry[key] for entry in self._info]
        if isinstance(idx, int):
            return self._info[idx][key]
        return [self._info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The entries (restricted to ``keys`` when given) of every output, or of the outputs at ``idx``."""
        positions = range(len(self._info)) if idx is None else [idx] if isinstance(idx, int) else idx
        dicts = [{k: v for k, v in self._info[i].items() if keys is None or k in keys} for i in positions]
        return dicts[0] if isinstance(idx, int) else dicts

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels ``C`` of the outputs, e.g. ``[96, 240, 384]``."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Strides of the outputs relative to the input, e.g. ``[8, 16, 32]``."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Names of the modules that produce the outputs, e.g. ``["block2", "block3", "block4"]``."""
        return self.get("module", idx)


class ConvStem(nn.Module):
    """``patch_embed1``: four 3×3 convs (strides 2, 1, 2, 1) with BN + GELU between, then LayerNorm.

    ``(B, 3, H, W)`` → ``(B, C0, ⌈H/4⌉, ⌈W/4⌉)``.
    """

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        mid = embed_dim // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, mid, 3, 2, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.GELU(),
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1),
        )  # fmt: skip
        self.norm = LayerNorm2d(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv1(x))

    def reparameterize(self) -> None:
        """Fold the three BatchNorms into the convs before them (inference only)."""
        for i, layer in enumerate(self.conv1):
            if isinstance(layer, nn.BatchNorm2d):
                self.conv1[i - 1] = fuse_conv_bn_eval(self.conv1[i - 1], layer)
                self.conv1[i] = nn.Identity()


class PatchEmbed(nn.Module):
    """``patch_embed2..4``: 3×3 stride-2 conv then LayerNorm. ``(B, Cin, H, W)`` → ``(B, C, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, 3, 2, 1)
        self.norm = LayerNorm2d(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Stage(NamedTuple):
    """The modules of one backbone stage (registered as ``patch_embed{s}``, ``block{s}``, ``d_convs{s}``)."""

    patch_embed: nn.Module
    blocks: nn.ModuleList
    d_convs: nn.ModuleList


class LRFormer(nn.Module):
    """LRFormer backbone, also usable as a feature extractor (timm ``features_only`` style).

    Stage ``s`` (1..4) is ``patch_embed{s}`` followed by the blocks ``block{s}.*``; all blocks of a
    stage share the four pyramid depth-wise convs ``d_convs{s}.0..3``. Layer scale exists in
    stages 3 and 4 only. The parameter names are those of the released checkpoints.

    Args:
        embed_dims, depths, num_heads, mlp_ratios, q_pooled_sizes: per-stage hyper-parameters.
        qkv_bias: bias in the LRSA query/key/value projections.
        drop_path_rate: stochastic depth, linear from 0 to this value over all blocks.
        layer_scale_init: initial layer-scale value when training from scratch.
        in_chans: input channels (3 for images; another count, e.g. RGB + depth, needs weights
            trained for it: the released ``patch_embed1`` takes 3).
        out_indices: 0-based indices of the stages (strides 4, 8, 16, 32) whose features ``forward``
            returns, in this order; negative ones count from the last (``-1``: stride 32). The stages
            after the last requested one are not built (no unused parameters, no wasted compute).
            Default: all four.

    Attributes:
        out_indices: the resolved (non-negative) ``out_indices``.
        feature_info: a :class:`FeatureInfo` with the channels, stride and module of each output.
        pruned_prefixes: state-dict key prefixes of the stages not built (``("patch_embed4.",
            "block4.", "d_convs4.")`` for ``out_indices=(1, 2)``); the checkpoint loader ignores them.
        config: the ``create_model`` arguments when built by ``create_model(features_only=True)``, else ``{}``.
        grad_checkpointing: activation checkpointing of every block in training
            (:meth:`set_grad_checkpointing`); off by default.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (48, 96, 240, 384),
        depths: Sequence[int] = (2, 2, 6, 3),
        num_heads: Sequence[int] = (2, 4, 10, 16),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        q_pooled_sizes: Sequence[int] = (16, 16, 16, 16),
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        hparams = (embed_dims, depths, num_heads, mlp_ratios, q_pooled_sizes)
        if any(len(v) != 4 for v in hparams):
            raise ConfigError(
                "embed_dims, depths, num_heads, mlp_ratios and q_pooled_sizes need 4 entries each "
                f"(one per stage), got {[list(v) for v in hparams]}"
            )
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.in_chans = in_chans
        self.out_indices = resolve_out_indices(out_indices)
        self.num_stages = max(self.out_indices) + 1
        self.pruned_prefixes = tuple(
            f"{module}{s}." for s in range(self.num_stages + 1, 5) for module in ("patch_embed", "block", "d_convs")
        )
        self.feature_info = FeatureInfo(
            [
                {"num_chs": self.embed_dims[i], "reduction": STRIDES[i], "module": f"block{i + 1}", "index": i}
                for i in self.out_indices
            ]
        )
        self.config: dict[str, Any] = {}
        self.grad_checkpointing = False
        # the rates of the full four-stage model, so that a pruned backbone's blocks keep theirs
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # float32 steps, as official
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        in_dim = in_chans
        for s in range(self.num_stages):
            dim = embed_dims[s]
            embed = ConvStem(in_dim, dim) if s == 0 else PatchEmbed(in_dim, dim)
            self.add_module(f"patch_embed{s + 1}", embed)
            pre_norm_blocks = XL_PRE_NORM_BLOCKS if s == 2 and depths[2] > 20 else ()
            blocks = nn.ModuleList(
                LRBlock(
                    dim,
                    LRSA(dim, num_heads[s], q_pooled_sizes[s], qkv_bias=qkv_bias),
                    mlp_ratio=mlp_ratios[s],
                    norm_layer=norm_layer,
                    layer_scale=s >= 2,
                    layer_scale_init=layer_scale_init,
                    pre_norm=i in pre_norm_blocks,
                    drop_path=rates[sum(depths[:s]) + i],
                )
                for i in range(depths[s])
            )
            self.add_module(f"block{s + 1}", blocks)
            self.add_module(f"d_convs{s + 1}", nn.ModuleList(ResidualDepthwiseConv(dim) for _ in range(4)))
            in_dim = dim
        self.apply(init_weights)

    def stages(self) -> list[Stage]:
        """The built stages in order (all four unless pruned); the parameter names stay ``patch_embed{s}.*`` etc."""
        modules = dict(self.named_children())
        return [
            Stage(modules[f"patch_embed{s}"], modules[f"block{s}"], modules[f"d_convs{s}"])
            for s in range(1, self.num_stages + 1)
        ]

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block in training (timm's API): each block keeps only its input
        ``(B, C, H, W)`` during the forward pass and is run again in the backward pass, with exact
        gradients (the shared ``d_convs`` included), the same stochastic-depth masks and BatchNorm
        statistics (XL's ``pre_norm``) updated once per step. Eval mode and ``torch.no_grad`` are
        unaffected. See :mod:`lrformer.models.activation_checkpointing`."""
        self.grad_checkpointing = enable

    @staticmethod
    def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
        """Sizes of the four stages' features for an ``H×W`` input (each k3/s2/p1 conv gives ``⌈n/2⌉``)."""
        sizes = []
        height, width = math.ceil(height / 2), math.ceil(width / 2)  # first stem conv
        for _ in range(4):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
            sizes.append((height, width))
        return sizes

    def attention_elements(self, height: int, width: int) -> int:
        """Largest LRSA attention matrix (entries per image) over the built stages for an ``H×W`` input."""
        return max(
            (
                stage.blocks[0].attn.attention_elements(*size)
                for stage, size in zip(self.stages(), self.feature_sizes(height, width))
                if len(stage.blocks)
            ),
            default=0,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_chans, H, W)`` with H, W >= 32 → the features of the stages ``out_indices``, in that order.

        The feature of stage index ``i`` is ``(B, C_i, H_i, W_i)`` with ``C_i = embed_dims[i]`` and
        ``H_i = ⌈H / stride_i⌉`` for the strides 4, 8, 16, 32 (each stage halves with ``⌈n / 2⌉``), so H
        and W need not be multiples of 32. The default (all stages) returns four features.
        """
        check_input(x, self.in_chans)
        x = x.contiguous(memory_format=torch.channels_last)
        features = []
        for stage in self.stages():
            x = stage.patch_embed(x)
            for block in stage.blocks:
                x = checkpoint_module(block, x, stage.d_convs, enabled=self.grad_checkpointing)
            features.append(x)
        return [features[i] for i in self.out_indices]

    def extra_repr(self) -> str:
        return f"out_indices={self.out_indices}" if self.out_indices != tuple(range(4)) else ""


def init_weights(module: nn.Module) -> None:
    """Official initialisation for training from scratch: truncated normal (std 0.02) for Linear,
    fan-out normal for convs, ones/zeros for norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
