"""Straightforward upstream-style evaluation of a :class:`StackMFFV3`, the reference for tests and benchmarks.

It follows the order of operations of the public StackMFF-V3 code: all B·N layers through the encoder at once in
NCHW, full-resolution 16-channel features for every layer, the layer-axis attention as ``nn.MultiheadAttention`` on
B·H·W sequences (RoPE applied to the input and the residual taken from the rotated input), then ``MaxPool3d`` over
the channels. Weights are copied from the fast model, so outputs must agree up to float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .stackmff_v3 import StackMFFV3, rope_tables

__all__ = ["UpstreamStyleV3"]


class _MHALayer(nn.Module):
    def __init__(self, src, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        with torch.no_grad():
            self.attn.in_proj_weight.copy_(src.attn.in_proj_weight)
            self.attn.in_proj_bias.copy_(src.attn.in_proj_bias)
            self.attn.out_proj.weight.copy_(src.attn.out_proj.weight)
            self.attn.out_proj.bias.copy_(src.attn.out_proj.bias)
        self.ffn, self.norm1, self.norm2 = copy.deepcopy(src.ffn), copy.deepcopy(src.norm1), copy.deepcopy(src.norm2)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        if rope is not None:
            cos, sin = rope
            x1, x2 = x[..., ::2], x[..., 1::2]
            x = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
        x = self.norm1(x + self.attn(x, x, x)[0])
        return self.norm2(x + self.ffn(x))


class UpstreamStyleV3(nn.Module):
    """Upstream-style forward of a fast model's weights: luma ``(B, N, H, W)`` → logits ``(B, N, H, W)``."""

    def __init__(self, model: StackMFFV3):
        super().__init__()
        self.cfg = model.cfg
        self.encoder = copy.deepcopy(model.encoder).to(memory_format=torch.contiguous_format)
        e = model.cfg.embed_dim
        self.layers = nn.ModuleList(_MHALayer(layer, e, model.cfg.attn_heads) for layer in model.attn_layers)
        self.pool = nn.MaxPool3d(kernel_size=(e, 1, 1), stride=(e, 1, 1))
        self.decode = model.decode.__func__.__get__(self)  # same maths as the fast model's decode (whole image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h, w = x.shape
        low = self.encoder(x.reshape(b * n, 1, h, w))  # (B*N, E, H/4, W/4)
        feats = self.decode(low)  # (B*N, E, H, W)
        e = feats.shape[1]
        feats = feats.reshape(b, n, e, h, w)
        t = feats.permute(0, 3, 4, 1, 2).reshape(b * h * w, n, e)  # (B*H*W, N, E)
        rope = rope_tables(n, e, device=x.device) if self.cfg.rope else None
        for layer in self.layers:
            t = layer(t, rope)
        t = t.reshape(b, h, w, n, e).permute(0, 3, 4, 1, 2)  # (B, N, E, H, W)
        return self.pool(t).squeeze(2)  # (B, N, H, W)
