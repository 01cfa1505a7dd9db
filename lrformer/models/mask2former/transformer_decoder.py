"""The masked-attention transformer decoder of Mask2Former (mmdet layout)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import FFN


class MultiheadAttention(nn.Module):
    """mmcv's ``MultiheadAttention`` wrapper: positions added to query and key (not value), a
    batch-first ``nn.MultiheadAttention`` as ``attn``, and the residual."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)

    def forward(self, query, key, value, query_pos, key_pos, attn_mask=None) -> torch.Tensor:
        out = self.attn(query + query_pos, key + key_pos, value, attn_mask=attn_mask, need_weights=False)[0]
        return query + out


class MaskedDecoderLayer(nn.Module):
    """Cross-attention (masked) → ``norms.0`` → self-attention → ``norms.1`` → FFN → ``norms.2``."""

    def __init__(self, dims: int, heads: int, ffn_dims: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dims, heads)
        self.cross_attn = MultiheadAttention(dims, heads)
        self.ffn = FFN(dims, ffn_dims)
        self.norms = nn.ModuleList(nn.LayerNorm(dims) for _ in range(3))

    def forward(self, query, query_pos, memory, memory_pos, attn_mask) -> torch.Tensor:
        """``query`` ``(B, Q, C)``, ``memory`` ``(B, HW, C)``, ``attn_mask`` ``(B·heads, Q, HW)`` (True: masked)."""
        query = self.norms[0](self.cross_attn(query, memory, memory, query_pos, memory_pos, attn_mask))
        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos))
        return self.norms[2](self.ffn(query))


class MaskedTransformerDecoder(nn.Module):
    """``layers`` plus the ``post_norm`` shared by every prediction."""

    def __init__(self, num_layers: int, dims: int, heads: int, ffn_dims: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MaskedDecoderLayer(dims, heads, ffn_dims) for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(dims)
