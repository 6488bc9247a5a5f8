"""Attention for the Open-Sora Plan v1.3 transformer: the SDPA dispatch, Skiparse regrouping and its
masks, and the `Attention` module (diffusers key layout: to_q, to_k, to_v, to_out.0) run by a processor.

Skiparse ("sparse 1-D") attention splits the N tokens of a video, in (t, y, x) order and zero-padded at the
end to a multiple of k*k, into k groups that attend only within themselves; the groups move into the batch
axis (new batch index = group * B + b):

* single-skip: token n belongs to group n mod k (every k-th token);
* group-skip:  n = a*k*k + g*k + r belongs to group g (every k-th run of k tokens), ordered by (a, r).

Sequence-parallel seam: under sequence parallelism (the reference's `--sp`) each rank holds a contiguous slice
of the video tokens and the whole text. `AttnProcessor` has three hooks, identities on one device, that a
sequence-parallel processor (`distributed.sequence_parallel`) overrides: `gather_sequence` and `scatter_sequence`
around every self-attention (so that RoPE, Skiparse and the full-length masks see the whole sequence, with
heads / sp heads per rank), and `full_grid`, the grid the model builds RoPE tables and Skiparse padding for.
Cross-attention does not communicate: each query row is independent, so local video queries attend to the
whole text as they are (the reference shards the text too, which needs 512 % sp == 0 and buys nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opensora_cli.models.embeddings import apply_rotary_emb

# Additive biases of the reference: -10000 for masked tokens, -9980 for Skiparse padding. exp() of either
# underflows to 0 in float32, so both act as "never attend", yet a fully masked row stays finite (no NaN).
MASKED_BIAS = -10000.0
SKIPARSE_PAD_BIAS = -9980.0


def dispatch_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention (softmax scale 1/sqrt(head_dim)).

    Args:
        query: (B, heads, S_q, Dh); key, value: (B, heads, S_kv, Dh).
        attention_mask: None, or an additive bias in the query's dtype (or a boolean "may attend" mask)
            broadcasting to (B, heads, S_q, S_kv), typically (B, 1, 1, S_kv). Pass None when nothing is
            padded: only then can the mask-free kernels (flash, cuDNN) run on GPU.

    Returns:
        (B, heads, S_q, Dh).
    """
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)


# ------------------------------------------------------------------------------------------------------------
# Skiparse regrouping
# ------------------------------------------------------------------------------------------------------------


def skiparse_pad_length(num_tokens: int, sparse_n: int) -> int:
    """Zero tokens appended so that the sequence is a multiple of sparse_n ** 2."""
    return -num_tokens % (sparse_n * sparse_n)


def skiparse_regroup(hidden_states: torch.Tensor, sparse_n: int, group: bool) -> torch.Tensor:
    """Move the Skiparse groups into the batch axis (one copy).

    Args:
        hidden_states: (B, N, ...) with N a multiple of sparse_n ** 2 (pad first).
        group: group-skip (True) or single-skip (False).

    Returns:
        (sparse_n * B, N / sparse_n, ...), batch index = group * B + b.
    """
    batch, num_tokens, *rest = hidden_states.shape
    k = sparse_n
    runs = (num_tokens // (k * k), k, k) if group else (num_tokens // k, k)  # (A, g, r) or (A, g)
    grouped = hidden_states.view(batch, *runs, *rest).movedim(2, 0)  # (g, B, A, [r,] ...)
    return grouped.reshape(k * batch, num_tokens // k, *rest)  # (k*B, N/k, ...)


def skiparse_ungroup(hidden_states: torch.Tensor, sparse_n: int, group: bool) -> torch.Tensor:
    """Exact inverse of `skiparse_regroup`: (sparse_n * B, N / sparse_n, ...) -> (B, N, ...)."""
    k = sparse_n
    grouped_batch, group_len, *rest = hidden_states.shape
    runs = (group_len // k, k) if group else (group_len,)  # (A, r) or (A,)
    grouped = hidden_states.view(k, grouped_batch // k, *runs, *rest).movedim(0, 2)  # (B, A, g, [r,] ...)
    return grouped.reshape(grouped_batch // k, group_len * k, *rest)  # (B, N, ...)


def prepare_self_attention_mask(video_bias: torch.Tensor | None, num_tokens: int, sparse_n: int = 1,
                                group: bool = False, dtype: torch.dtype = torch.float32,
                                device: torch.device | None = None, batch_size: int = 1) -> torch.Tensor | None:
    """The self-attention mask of one layer kind, broadcasting over heads and queries.

    Args:
        video_bias: (B, N) additive bias (0 valid, -10000 padding), or None when every token is valid.
        num_tokens: N (of the full grid under sequence parallelism).
        sparse_n, group: the layer's Skiparse layout; sparse_n = 1 is dense.

    Returns:
        None when nothing needs masking (no bias and no Skiparse padding) — so flash attention can run —
        else (sparse_n * B, 1, 1, N_pad / sparse_n) with Skiparse padding at -9980, as the reference.
    """
    pad = skiparse_pad_length(num_tokens, sparse_n)
    if video_bias is None:
        if pad == 0:
            return None
        video_bias = torch.zeros(batch_size, num_tokens, dtype=dtype, device=device)
    if pad:
        video_bias = F.pad(video_bias, (0, pad), value=SKIPARSE_PAD_BIAS)  # (B, N_pad)
    if sparse_n > 1:
        video_bias = skiparse_regroup(video_bias, sparse_n, group)  # (k*B, N_pad/k)
    return video_bias[:, None, None, :]  # (k*B, 1, 1, N_pad/k)


# ------------------------------------------------------------------------------------------------------------
# Attention module and processor
# ------------------------------------------------------------------------------------------------------------


class AttnProcessor:
    """Single-device attention: projections, [gather], RoPE, Skiparse regroup, SDPA, ungroup, [scatter],
    output projection.

    Self-attention when `encoder_hidden_states` is None (RoPE and Skiparse apply), cross-attention otherwise
    (always dense: a Skiparse layer's queries would each still see every text token, so regrouping them as the
    reference does changes nothing but the cost). Only self-attention calls the sequence-parallel hooks.
    """

    def gather_sequence(self, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequence-parallel hook: each (B, S_local, heads, Dh) -> (B, S, heads / sp, Dh); identity here."""
        return query, key, value

    def scatter_sequence(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Sequence-parallel hook: (B, N, heads / sp, Dh) -> (B, N_local, heads, Dh); identity here."""
        return hidden_states

    def full_grid(self, grid: tuple[int, int, int]) -> tuple[int, int, int]:
        """Sequence-parallel hook: the token grid after `gather_sequence`; identity here."""
        return grid

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # 1. Projections, split into heads
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))  # (B, N, heads, Dh)
        key = attn.to_k(context).unflatten(-1, (attn.heads, -1))  # (B, S, heads, Dh)
        value = attn.to_v(context).unflatten(-1, (attn.heads, -1))  # (B, S, heads, Dh)

        # 2. Sequence parallel, self-attention only: full sequence, fewer heads (identity here). Rows of
        #    cross-attention are independent: local queries against the whole text need no exchange.
        if encoder_hidden_states is None:
            query, key, value = self.gather_sequence(query, key, value)  # (B, N, heads / sp, Dh)

        # 3. RoPE-3D on queries and keys of self-attention (positions of the full grid)
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)

        # 4. Skiparse: pad to a multiple of k*k, groups into the batch axis: (k*B, N_pad/k, heads, Dh)
        num_tokens = query.shape[1]
        sparse_n = attn.sparse_n if encoder_hidden_states is None else 1
        if sparse_n > 1:
            pad = skiparse_pad_length(num_tokens, sparse_n)
            if pad:  # (B, N_pad, heads, Dh)
                query, key, value = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (query, key, value))
            query, key, value = (skiparse_regroup(x, sparse_n, attn.sparse_group) for x in (query, key, value))

        # 5. Attention; SDPA wants (B, heads, S, Dh): transposed views, no copies
        hidden_states = dispatch_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attention_mask
        ).transpose(1, 2)  # (B', S_q, heads, Dh)

        # 6. Undo the regrouping, drop the padding
        if sparse_n > 1:
            hidden_states = skiparse_ungroup(hidden_states, sparse_n, attn.sparse_group)[:, :num_tokens]
        if encoder_hidden_states is None:
            hidden_states = self.scatter_sequence(hidden_states)  # (B, N_local, heads, Dh)

        # 7. Output projection
        hidden_states = attn.to_out[0](hidden_states.flatten(2))  # (B, N_local, heads*Dh)
        return attn.to_out[1](hidden_states)


class Attention(nn.Module):
    """Multi-head attention with the diffusers key layout; the work is done by `self.processor`.

    Args:
        query_dim: width of the queries' stream.
        heads, dim_head: heads x width per head.
        cross_attention_dim: width of keys/values' stream (None: self-attention, = query_dim).
        bias: bias on to_q, to_k, to_v (to_out always has one).
        dropout: on the output.
        sparse_n, sparse_group: Skiparse layout of self-attention (sparse_n = 1: dense).
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        sparse_n: int = 1,
        sparse_group: bool = False,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        kv_dim = query_dim if cross_attention_dim is None else cross_attention_dim
        self.heads = heads
        self.sparse_n = sparse_n
        self.sparse_group = sparse_group
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(dropout)])
        self.processor = AttnProcessor()

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states: (B, N, query_dim).
            encoder_hidden_states: (B, L, cross_attention_dim) for cross-attention, None for self-attention.
            attention_mask: None or a bias broadcasting to (B', heads, S_q, S_kv): for self-attention the
                output of `prepare_self_attention_mask` for this layer's Skiparse layout, for cross-attention
                (B, 1, 1, L).
            rotary_emb: (cos, sin) RoPE-3D tables of the full token grid, self-attention only.

        Returns:
            (B, N, query_dim).
        """
        return self.processor(self, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
