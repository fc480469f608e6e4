"""Trajectory windows and the causal token transformer shared by the sequence models.

CDT's decision transformer and DSPO's SafetyTransformer both read windows of ``K`` consecutive
steps cut out of a dataset's flat ``(N, ...)`` arrays, and both run them through the same
stack: each step becomes a few tokens (CDT: return, cost, state, action; DSPO: state, action),
every token of a step gets that step's position embedding added, the tokens are interleaved
step by step and pass through causal transformer blocks.

- Windows: a window starts ``offset`` steps into an episode; one that runs past the episode's
  end is padded at the end: its padded steps read the episode's last row and are then zeroed,
  with ``mask`` 0. :func:`window_index` gives the rows and the mask,
  :meth:`WindowIndex.gather` the masked values, :func:`uniform_offsets` a uniform start, and
  :class:`EpisodeWindows` the windows of a dataset's observations and actions.
- :func:`masked_mean`: a mean over the real (unpadded) steps.
- :class:`TokenTransformer`: the trunk (embedding norm, dropout, causal blocks, output norm)
  that a model's per-step embeddings go through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from safe_agents.common.dataset import OfflineDataset
from safe_agents.common.networks import CausalTransformerBlock


# ----------------------------------------------------------------------------------- windows
class WindowIndex(NamedTuple):
    """Where ``B`` windows of ``K`` steps read from flat per-row arrays, and which steps are real.

    Attributes:
        rows: ``(B, K)`` int64 flat rows; padded steps repeat their episode's last row.
        steps: ``(B, K)`` int64 step index within the episode (counting on past its end).
        mask: ``(B, K)`` float, 1.0 on real steps and 0.0 on padding.
    """

    rows: torch.Tensor
    steps: torch.Tensor
    mask: torch.Tensor

    def gather(self, values: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """The windows of ``values`` ``(N, ...)``: ``(B, K, ...)``, zero on padded steps.

        Args:
            values: one entry per flat row.
            shift: ``(B,)`` added to every step of each window (before the padding is zeroed).
        """
        windows = values[self.rows]  # (B, K, ...)
        trailing = [1] * (values.dim() - 1)
        if shift is not None:
            windows = windows + shift.reshape(-1, 1, *trailing)  # (B, 1, 1...)
        return windows * self.mask.reshape(*self.mask.shape, *trailing)  # (B, K, 1...)


def window_index(
    starts: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor, window_len: int
) -> WindowIndex:
    """Windows of ``window_len`` steps, each ``offset`` steps into an episode.

    Args:
        starts: ``(B,)`` int64 flat row of the first step of each window's episode.
        lengths: ``(B,)`` int64 steps of that episode.
        offsets: ``(B,)`` int64 first step of the window within the episode (``< length``).
        window_len: ``K``.
    """
    steps = offsets[:, None] + torch.arange(window_len, device=offsets.device)  # (B, K)
    length = lengths[:, None]  # (B, 1)
    rows = starts[:, None] + torch.minimum(steps, length - 1)  # (B, K)
    return WindowIndex(rows, steps, (steps < length).float())


def uniform_offsets(uniform: torch.Tensor, n_starts: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 starts, uniform over ``0 .. n_starts - 1``, from ``(B,)`` draws in ``[0, 1)``.

    The clamp catches ``uniform * n_starts`` rounding up to ``n_starts`` in float32.
    """
    return (uniform * n_starts).long().clamp(max=n_starts - 1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1: over everything, or along ``dim``.

    The denominator is at least 1, so a window (or batch) without real steps gives 0.
    """
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1.0)


class WindowBatch(NamedTuple):
    """Trajectory windows (padded at the end) and the index of the episode of each."""

    obs: torch.Tensor  # (B, K, obs_dim), raw
    actions: torch.Tensor  # (B, K, act_dim), environment units
    mask: torch.Tensor  # (B, K)
    episodes: torch.Tensor  # (B,)


class EpisodeWindows:
    """A dataset's episodes as windows of ``length`` steps of observations and actions.

    :meth:`sample` draws an episode uniformly, then a start uniformly among those that keep the
    window inside it (episodes shorter than the window start at 0 and are padded). With
    ``full=True`` only episodes of at least ``length`` steps are drawn (no padding).
    :meth:`index` gives the rows of any windows, for callers that sample their own way or
    gather other per-row arrays.

    Args:
        dataset: an ``envs.OfflineDataset`` (its costs are not read).
        length: ``K``, steps per window.
        device: where the tensors live.
        full: sample only windows without padding.

    Raises:
        ValueError: ``full`` and no episode has ``length`` steps.
    """

    def __init__(
        self, dataset: OfflineDataset, length: int, device: torch.device, full: bool = False
    ) -> None:
        bounds = dataset.episode_bounds()
        starts = np.array([start for start, _ in bounds], dtype=np.int64)
        lengths = np.array([stop - start for start, stop in bounds], dtype=np.int64)
        eligible = np.flatnonzero(lengths >= length) if full else np.arange(len(bounds))
        if not len(eligible):
            raise ValueError(
                f"no episode has the {length} steps of a full window (the longest has "
                f"{lengths.max()}); lower the window length (DSPO: segment_len)"
            )
        self.length = length
        self.device = device
        self.obs = torch.as_tensor(dataset.observations, device=device)
        self.actions = torch.as_tensor(dataset.actions, device=device)
        self.starts = torch.as_tensor(starts, device=device)
        self.lengths = torch.as_tensor(lengths, device=device)
        self.eligible = torch.as_tensor(eligible, device=device)

    def index(self, episodes: torch.Tensor, offsets: torch.Tensor) -> WindowIndex:
        """The rows and mask of windows starting ``offsets`` ``(B,)`` into ``episodes`` ``(B,)``."""
        return window_index(self.starts[episodes], self.lengths[episodes], offsets, self.length)

    def _gather(self, episodes: torch.Tensor, offsets: torch.Tensor) -> WindowBatch:
        index = self.index(episodes, offsets)
        return WindowBatch(index.gather(self.obs), index.gather(self.actions), index.mask, episodes)

    def sample(self, batch_size: int, generator: torch.Generator) -> WindowBatch:
        """``batch_size`` windows, drawn with ``generator`` as the class docstring says."""
        draw = generator.device
        pick = torch.randint(len(self.eligible), (batch_size,), generator=generator, device=draw)
        episodes = self.eligible[pick.to(self.device)]
        room = (self.lengths[episodes] - self.length).clamp(min=0) + 1  # starts inside the episode
        uniform = torch.rand(batch_size, generator=generator, device=draw).to(self.device)
        return self._gather(episodes, uniform_offsets(uniform, room))

    def covering(self) -> WindowBatch:
        """Consecutive windows that cover every episode once (the last one padded)."""
        episodes, offsets = [], []
        for episode, length in enumerate(self.lengths.tolist()):
            for offset in range(0, length, self.length):
                episodes.append(episode)
                offsets.append(offset)
        return self._gather(
            torch.as_tensor(episodes, device=self.device),
            torch.as_tensor(offsets, device=self.device),
        )


# ----------------------------------------------------------------------------------- the trunk
class TokenTransformer(nn.Module):
    """Base of the models that read ``tokens_per_step`` tokens per step through causal blocks.

    A subclass sets ``tokens_per_step``, registers its embeddings, calls
    :meth:`_add_causal_trunk`, then registers its heads (registration order fixes the order of
    the weight initialisation, so it is part of a seeded run), and passes its per-step
    embeddings to :meth:`encode_steps`. The trunk's attribute names are those of saved agents'
    weights.
    """

    tokens_per_step: ClassVar[int]
    embedding_dim: int
    embedding_norm: nn.LayerNorm
    embedding_drop: nn.Dropout
    blocks: nn.ModuleList
    output_norm: nn.LayerNorm

    def _add_causal_trunk(
        self,
        embedding_dim: int,
        num_layers: int,
        num_heads: int,
        attention_dropout: float,
        residual_dropout: float,
        embedding_dropout: float,
    ) -> None:
        """Register the embedding norm and dropout, ``num_layers`` causal blocks and the output
        norm (in that order)."""
        self.embedding_dim = embedding_dim
        self.embedding_norm = nn.LayerNorm(embedding_dim)
        self.embedding_drop = nn.Dropout(embedding_dropout)
        self.blocks = nn.ModuleList(
            CausalTransformerBlock(embedding_dim, num_heads, attention_dropout, residual_dropout)
            for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(embedding_dim)

    def encode_steps(
        self,
        step_embeddings: Sequence[torch.Tensor],
        position: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The causal outputs of the interleaved tokens, ``(B, K, tokens_per_step, D)``.

        Args:
            step_embeddings: ``tokens_per_step`` tensors ``(B, K, D)``, each step's tokens in
                reading order (token ``i`` of step ``t`` sees the tokens before it and no later).
            position: ``(B, K, D)`` or ``(K, D)``, added to every token of a step.
            padding_mask: ``(B, K)``, True on padded steps: none of their tokens is attended to.

        Returns:
            The normalized outputs; ``[:, t, i]`` is read at token ``i`` of step ``t``.
        """
        n_tokens = self.tokens_per_step
        batch, steps = step_embeddings[0].shape[0], step_embeddings[0].shape[1]
        tokens = torch.stack([embedding + position for embedding in step_embeddings], dim=2)
        # (B, K, n, D) -> (B, n K, D): step 1's n tokens, then step 2's, ...
        sequence = tokens.reshape(batch, steps * n_tokens, self.embedding_dim)
        token_padding = None
        if padding_mask is not None:
            token_padding = padding_mask.repeat_interleave(n_tokens, dim=1)  # (B, n K)
        out = self.embedding_drop(self.embedding_norm(sequence))
        for block in self.blocks:
            out = block(out, token_padding)
        normed: torch.Tensor = self.output_norm(out)
        return normed.reshape(batch, steps, n_tokens, -1)  # (B, n K, D) -> (B, K, n, D)
