"""Mask2Former head for semantic segmentation (mmseg 1.x ``Mask2FormerHead`` on mmdet 3.x).

Design notes: ``docs/design.md``, section 4 (decode heads).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..decode_head import DecodeHead
from .criterion import Mask2FormerCriterion
from .pixel_decoder import MSDeformAttnPixelDecoder
from .positional_encoding import SinePositionalEncoding
from .transformer_decoder import MaskedTransformerDecoder


class Mask2FormerOutput(NamedTuple):
    """The raw output of :class:`Mask2FormerHead`, one entry per prediction: ``num_layers + 1``, the
    first from ``query_feat`` before any decoder layer, the last the final prediction. A tuple, so
    ``class_logits, mask_logits = head(features)`` unpacks it."""

    class_logits: list[torch.Tensor]
    """``(B, Q, num_classes + 1)`` per prediction, the last class "no object"."""
    mask_logits: list[torch.Tensor]
    """``(B, Q, ⌈H/4⌉, ⌈W/4⌉)`` per prediction."""


class Mask2FormerHead(DecodeHead):
    """Pixel decoder + masked-attention transformer decoder + class / mask predictions, a
    :class:`~lrformer.models.decode_head.DecodeHead`.

    ``forward(features)`` returns a :class:`Mask2FormerOutput` (per-layer class and mask logits),
    :meth:`predict` the semantic scores, :meth:`loss` the Mask2Former criterion's losses
    (:class:`~.criterion.Mask2FormerCriterion`, built at each call: it holds no parameters, so the
    head's state dict is the released layout).

    Args:
        in_channels: channels of the four backbone features (strides 4, 8, 16, 32).
        num_classes: semantic classes (``cls_embed`` has one more output: "no object").
        feat_channels: width of the pixel decoder and transformer decoder.
        num_queries: object queries.
        pixel_decoder_*: encoder layers, heads, sampling points, FFN width, GroupNorm groups.
        transformer_decoder_*: decoder layers, heads, FFN width.
        positional_encoding_num_feats: sine features per axis (half the channels).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int = 150,
        feat_channels: int = 256,
        num_queries: int = 100,
        pixel_decoder_layers: int = 6,
        pixel_decoder_heads: int = 8,
        pixel_decoder_points: int = 4,
        pixel_decoder_ffn: int = 1024,
        pixel_decoder_gn_groups: int = 32,
        transformer_decoder_layers: int = 9,
        transformer_decoder_heads: int = 8,
        transformer_decoder_ffn: int = 2048,
        positional_encoding_num_feats: int = 128,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_heads, self.num_feature_levels = (
            num_classes,
            transformer_decoder_heads,
            num_feature_levels,
        )
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels, feat_channels, feat_channels, pixel_decoder_layers, pixel_decoder_heads,
            pixel_decoder_points, pixel_decoder_ffn, pixel_decoder_gn_groups, positional_encoding_num_feats,
            num_feature_levels,
        )  # fmt: skip
        self.transformer_decoder = MaskedTransformerDecoder(
            transformer_decoder_layers, feat_channels, transformer_decoder_heads, transformer_decoder_ffn
        )
        self.decoder_positional_encoding = SinePositionalEncoding(positional_encoding_num_feats)
        self.query_embed = nn.Embedding(num_queries, feat_channels)
        self.query_feat = nn.Embedding(num_queries, feat_channels)
        self.level_embed = nn.Embedding(num_feature_levels, feat_channels)
        self.cls_embed = nn.Linear(feat_channels, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(feat_channels, feat_channels), nn.ReLU(inplace=True),
            nn.Linear(feat_channels, feat_channels), nn.ReLU(inplace=True),
            nn.Linear(feat_channels, feat_channels),
        )  # fmt: skip
        for param in self.transformer_decoder.parameters():  # mmdet's init (the pixel decoder inits itself)
            if param.dim() > 1:
                nn.init.xavier_normal_(param)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the pixel decoder's encoder layers in training (timm's API); the transformer
        decoder works on ``num_queries`` tokens and is not checkpointed."""
        self.pixel_decoder.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        """Whether the pixel decoder checkpoints its encoder layers."""
        return self.pixel_decoder.grad_checkpointing

    def _predict_layer(self, query: torch.Tensor, mask_features: torch.Tensor, mask_size: tuple[int, int]):
        """Class scores, mask logits and the next layer's attention mask (True: masked)."""
        query = self.transformer_decoder.post_norm(query)
        cls_pred = self.cls_embed(query)
        mask_pred = torch.einsum("bqc,bchw->bqhw", self.mask_embed(query), mask_features)
        attn_mask = F.interpolate(mask_pred, mask_size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)
        attn_mask = (attn_mask.sigmoid() < 0.5).detach()
        return cls_pred, mask_pred, attn_mask

    def attention_elements(self, height: int, width: int) -> int:
        """Entries per image of the largest masked cross-attention, on the stride-8 memory of
        ``height × width`` tokens: ``heads · num_queries · height · width``."""
        return self.num_heads * self.query_feat.num_embeddings * height * width

    def forward(self, features: Sequence[torch.Tensor]) -> Mask2FormerOutput:
        """Four backbone features → :class:`Mask2FormerOutput` (class and mask logits per layer)."""
        batch = features[0].shape[0]
        mask_features, memories = self.pixel_decoder(features)
        inputs, positions = [], []
        for i, memory in enumerate(memories):
            inputs.append(memory.flatten(2).transpose(1, 2) + self.level_embed.weight[i].view(1, 1, -1))
            pos = self.decoder_positional_encoding(batch, *memory.shape[-2:], memory.device)
            positions.append(pos.flatten(2).transpose(1, 2).to(memory.dtype))
        query = self.query_feat.weight.unsqueeze(0).repeat(batch, 1, 1)
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(batch, 1, 1)
        cls_pred, mask_pred, attn_mask = self._predict_layer(query, mask_features, memories[0].shape[-2:])
        cls_preds, mask_preds = [cls_pred], [mask_pred]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_feature_levels
            # a query whose keys are all masked attends to everything instead
            attn_mask = attn_mask & (attn_mask.sum(-1) != attn_mask.shape[-1]).unsqueeze(-1)
            query = layer(query, query_pos, inputs[level], positions[level], attn_mask)
            next_size = memories[(i + 1) % self.num_feature_levels].shape[-2:]
            cls_pred, mask_pred, attn_mask = self._predict_layer(query, mask_features, next_size)
            cls_preds.append(cls_pred)
            mask_preds.append(mask_pred)
        return Mask2FormerOutput(cls_preds, mask_preds)

    @staticmethod
    def semantic_scores(cls_pred: torch.Tensor, mask_pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``softmax(cls)[..., :-1]`` and ``sigmoid(mask upsampled to size)`` summed over queries: ``(B, C, H, W)``."""
        mask_pred = F.interpolate(mask_pred, size=size, mode="bilinear", align_corners=False)
        return torch.einsum("bqc,bqhw->bchw", cls_pred.softmax(-1)[..., :-1], mask_pred.sigmoid())

    def predict(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Float32 semantic class scores ``(B, num_classes, *size)`` of the last prediction (a sum of
        probabilities, :meth:`semantic_scores`)."""
        output = self(features)
        return self.semantic_scores(output.class_logits[-1], output.mask_logits[-1], size).float()

    def criterion(self, ignore_index: int = 255) -> Mask2FormerCriterion:
        """The loss module of :meth:`loss`, with its weights and point-sampling settings (mmseg's
        config defaults); built per call, so it never enters the state dict."""
        return Mask2FormerCriterion(self.num_classes, ignore_index=ignore_index)

    def loss(self, output: Mask2FormerOutput, labels: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """The Mask2Former criterion (mmseg's config defaults) on every prediction of ``output``, in
        float32, against label maps ``labels`` ``(B, H, W)``: ``loss_cls``, ``loss_mask``,
        ``loss_dice``, ``d{i}.loss_*`` and their sum ``loss`` (see
        :meth:`Mask2FormerCriterion.forward <.criterion.Mask2FormerCriterion.forward>`). Needs scipy
        (the ``[train]`` extra) for the Hungarian matching."""
        return self.criterion(ignore_index)([c.float() for c in output.class_logits], [m.float() for m in output.mask_logits], labels)
