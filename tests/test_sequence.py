"""The shared sequence pieces: padded windows, the masked gather, masked means, the token trunk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import envs
from safe_agents.common.sequence import (
    EpisodeWindows,
    TokenTransformer,
    masked_mean,
    uniform_offsets,
    window_index,
)


def _two_episodes() -> envs.OfflineDataset:
    """Episodes of 3 and 2 steps; observation ``[row, 10 row]`` and action ``[-row]`` at row."""
    episodes = []
    for first, length in ((0, 3), (3, 2)):
        rows = torch.arange(first, first + length + 1, dtype=torch.float32)
        episodes.append(
            {
                "observations": torch.stack([rows, 10 * rows], dim=1).numpy(),
                "actions": -rows[:-1, None].numpy(),
                "rewards": torch.zeros(length).numpy(),
            }
        )
    return envs.OfflineDataset.from_episodes(episodes)


def test_window_index_pads_past_the_episode_end():
    # Episode 0 is rows 0-2, episode 1 rows 3-4; windows of 3 steps.
    index = window_index(
        starts=torch.tensor([0, 3, 0]),
        lengths=torch.tensor([3, 2, 3]),
        offsets=torch.tensor([1, 0, 0]),
        window_len=3,
    )
    assert index.rows.tolist() == [[1, 2, 2], [3, 4, 4], [0, 1, 2]]
    assert index.steps.tolist() == [[1, 2, 3], [0, 1, 2], [0, 1, 2]]
    assert index.mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    assert index.mask.dtype == torch.float32


def test_masked_gather_zeroes_padding_and_shifts_real_steps():
    index = window_index(torch.tensor([0, 3]), torch.tensor([3, 2]), torch.tensor([1, 0]), 3)
    values = torch.arange(5, dtype=torch.float32) * 10  # (N,): 0, 10, 20, 30, 40
    assert index.gather(values).tolist() == [[10, 20, 0], [30, 40, 0]]
    shifted = index.gather(values, shift=torch.tensor([1.0, -5.0]))
    assert shifted.tolist() == [[11, 21, 0], [25, 35, 0]]
    pairs = torch.stack([values, -values], dim=1)  # (N, 2)
    assert index.gather(pairs).tolist() == [
        [[10, -10], [20, -20], [0, 0]],
        [[30, -30], [40, -40], [0, 0]],
    ]


def test_uniform_offsets_cover_every_start_and_stay_below_the_count():
    uniform = torch.tensor([0.0, 0.49, 0.5, 0.99, 0.0, 0.7])
    n_starts = torch.tensor([2, 2, 2, 2, 1, 1])
    assert uniform_offsets(uniform, n_starts).tolist() == [0, 0, 1, 1, 0, 0]
    # A draw that rounds up to the count is clamped to the last start.
    assert uniform_offsets(torch.tensor([1.0]), torch.tensor([3])).tolist() == [2]


def test_masked_mean_over_everything_and_per_row():
    values = torch.tensor([[1.0, 2.0, 100.0], [4.0, 200.0, 300.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    # A row without real steps gives 0 (the denominator is at least 1).
    assert masked_mean(values, mask, dim=1).tolist() == [1.5, 4.0, 0.0]


def test_episode_windows_covering_reads_the_dataset_rows():
    windows = EpisodeWindows(_two_episodes(), length=2, device=torch.device("cpu"))
    batch = windows.covering()
    # Episode 0 (3 steps): offsets 0 and 2; episode 1 (2 steps): offset 0.
    assert batch.episodes.tolist() == [0, 0, 1]
    assert batch.mask.tolist() == [[1, 1], [1, 0], [1, 1]]
    assert batch.obs[:, :, 0].tolist() == [[0, 1], [2, 0], [3, 4]]
    assert batch.obs[:, :, 1].tolist() == [[0, 10], [20, 0], [30, 40]]
    assert batch.actions[:, :, 0].tolist() == [[0, -1], [-2, 0], [-3, -4]]


def test_episode_windows_sample_stays_inside_full_episodes():
    data = _two_episodes()
    windows = EpisodeWindows(data, length=3, device=torch.device("cpu"), full=True)
    batch = windows.sample(50, torch.Generator().manual_seed(0))
    # Only episode 0 has 3 steps: every window is its rows 0, 1, 2, unpadded.
    assert (batch.episodes == 0).all() and (batch.mask == 1).all()
    assert (batch.obs[:, :, 0] == torch.tensor([0.0, 1.0, 2.0])).all()
    with pytest.raises(ValueError, match="no episode has the 4 steps"):
        EpisodeWindows(data, length=4, device=torch.device("cpu"), full=True)


class _PairModel(TokenTransformer):
    """Two tokens per step (x, y), a learned position: the smallest user of the trunk."""

    tokens_per_step = 2

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.x_embedding = nn.Linear(1, 4)
        self.y_embedding = nn.Linear(1, 4)
        self.position_embedding = nn.Embedding(3, 4)
        self._add_causal_trunk(4, num_layers, 2, 0.0, 0.0, 0.0)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        position = self.position_embedding(torch.arange(x.shape[1]))  # (K, D)
        steps = [self.x_embedding(x.unsqueeze(-1)), self.y_embedding(y.unsqueeze(-1))]
        return self.encode_steps(steps, position, padding)


def test_trunk_interleaves_tokens_step_by_step():
    torch.manual_seed(0)
    model = _PairModel(num_layers=0).eval()
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    out = model(x, y)
    assert out.shape == (2, 3, 2, 4)
    # Without blocks each token is only normalized twice: token i of step t is the i-th
    # embedding of step t plus the position of t.
    position = model.position_embedding.weight  # (K, D)
    x_token = model.x_embedding(x.unsqueeze(-1)) + position
    y_token = model.y_embedding(y.unsqueeze(-1)) + position
    twice = lambda tokens: model.output_norm(model.embedding_norm(tokens))  # noqa: E731
    torch.testing.assert_close(out[:, :, 0], twice(x_token))
    torch.testing.assert_close(out[:, :, 1], twice(y_token))


def test_trunk_is_causal():
    torch.manual_seed(0)
    model = _PairModel(num_layers=2).eval()
    x, y = torch.randn(1, 3), torch.randn(1, 3)
    out = model(x, y)
    later_x, later_y = x.clone(), y.clone()
    later_y[0, 1], later_x[0, 2], later_y[0, 2] = 5.0, 5.0, 5.0
    changed = model(later_x, later_y)
    # Step 0 and step 1's x token precede every change; step 1's y token sees its own change.
    torch.testing.assert_close(changed[:, 0], out[:, 0])
    torch.testing.assert_close(changed[:, 1, 0], out[:, 1, 0])
    assert not torch.allclose(changed[:, 1, 1], out[:, 1, 1])


def test_trunk_keeps_the_weight_names_of_saved_agents():
    names = set(_PairModel(num_layers=1).state_dict())
    assert {"embedding_norm.weight", "output_norm.bias", "blocks.0.norm1.weight"} <= names
    assert {"blocks.0.attention.in_proj_weight", "blocks.0.mlp.0.weight"} <= names
