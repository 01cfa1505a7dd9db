"""Low-Resolution Self-Attention (LRSA): the backbone version and the LRHead version.

LRSA computes attention in a fixed low-resolution space whatever the input size: the queries are
average-pooled to a ~``q×q`` grid that keeps the aspect ratio, the keys/values come from a small
pyramid of pooled maps, and the attended result is bilinearly upsampled back to the input size.

Design notes: ``docs/design.md``, section 2 (LRSA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import pooled_size, pyramid_sizes, resize, to_map, to_tokens


class LRSA(nn.Module):
    """LRSA as used in the backbone blocks (parameters ``attn.q.0``, ``attn.kv.0``, ``attn.proj``, ``attn.norm``).

    Args:
        dim: channels ``C`` of the input map.
        num_heads: attention heads; channel ``c`` belongs to head ``c // (C / num_heads)``.
        q_pooled_size: short side ``q`` of the pooled query grid.
        qkv_bias: bias in the query and key/value projections.
        attn_drop: dropout on the attention weights (training only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        q_pooled_size: int = 16,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"LRSA: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.q_pooled_size = q_pooled_size
        self.kv_pooled_sizes = pyramid_sizes(q_pooled_size)
        self.attn_drop = attn_drop
        self.q = self._make_query_projection(dim, qkv_bias)
        self.kv = self._make_kv_projection(dim, qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    @staticmethod
    def _make_query_projection(dim: int, bias: bool) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, dim, bias=bias))

    @staticmethod
    def _make_kv_projection(dim: int, bias: bool) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, 2 * dim, bias=bias))

    def project_query(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` pooled map → query tokens ``(B, h·w, C)``."""
        return self.q(to_tokens(pooled))

    def pool_pyramid(self, x: torch.Tensor, d_convs: nn.ModuleList | None) -> torch.Tensor:
        """Pooled key/value pyramid of ``x`` ``(B, C, H, W)`` → tokens ``(B, ΣP_j, C)``.

        Each pooled map is refined by its residual depth-wise conv, ``P + D(P)``, when ``d_convs`` is given.
        """
        height, width = x.shape[-2:]
        pools = []
        for j, target in enumerate(self.kv_pooled_sizes):
            pooled = F.adaptive_avg_pool2d(x, pooled_size(height, width, target))
            if d_convs is not None:
                pooled = d_convs[j](pooled)
            pools.append(to_tokens(pooled))
        return torch.cat(pools, dim=1)

    def forward(self, x: torch.Tensor, d_convs: nn.ModuleList | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``.

        ``d_convs`` are the stage's four shared depth-wise convs (``None`` in the LRHead).
        """
        batch, channels, height, width = x.shape
        q_height, q_width = pooled_size(height, width, self.q_pooled_size)
        head_dim = channels // self.num_heads

        query = self.project_query(F.adaptive_avg_pool2d(x, (q_height, q_width)))
        key_value = self.kv(self.norm(self.pool_pyramid(x, d_convs)))

        # (B, N, C) → (B, heads, N, d); heads split the channels contiguously.
        query = query.reshape(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        key_value = key_value.reshape(batch, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            query, key_value[0], key_value[1], dropout_p=self.attn_drop if self.training else 0.0
        )
        out = self.proj(out.transpose(1, 2).reshape(batch, -1, channels))
        return resize(to_map(out, q_height, q_width), (height, width))

    def attention_elements(self, height: int, width: int) -> int:
        """Entries of the attention matrix for one ``H×W`` input: ``heads · N_q · N_kv``."""
        q_height, q_width = pooled_size(height, width, self.q_pooled_size)
        n_kv = sum(math.prod(pooled_size(height, width, t)) for t in self.kv_pooled_sizes)
        return self.num_heads * q_height * q_width * n_kv

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, q_pooled_size={self.q_pooled_size}, kv_pooled_sizes={self.kv_pooled_sizes}"


class HeadLRSA(LRSA):
    """LRSA of the LRHead fuse blocks: ``attn.q`` is a 1×1 conv on the pooled query
    map and ``attn.kv`` a plain Linear; no depth-wise convs refine the pooled pyramid."""

    @staticmethod
    def _make_query_projection(dim: int, bias: bool) -> nn.Module:
        return nn.Conv2d(dim, dim, 1, bias=bias)

    @staticmethod
    def _make_kv_projection(dim: int, bias: bool) -> nn.Module:
        return nn.Linear(dim, 2 * dim, bias=bias)

    def project_query(self, pooled: torch.Tensor) -> torch.Tensor:
        return to_tokens(self.q(pooled))
