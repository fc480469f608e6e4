"""Running a policy in an environment: evaluation with normalized metrics, and recording data."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from envs.adapters import find_task_spec
from envs.datasets import OfflineDataset
from envs.metrics import Normalizer
from envs.protocols import Policy, Predictor
from envs.tasks import TaskSpec
from envs.wrappers import NormalizedMetrics, find_wrapper, resolve_normalizer, step_cost


def as_callable(policy: Policy, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a callable ``obs -> action`` or anything with an SB3-style ``predict`` into a callable.

    Raises:
        TypeError: ``policy`` is neither.
    """
    if isinstance(policy, Predictor):
        predictor = policy  # bound here: mypy narrows a closure's variable only so
        return lambda obs: predictor.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError(
        f"policy must be a callable obs -> action or have a predict method, got {type(policy)}"
    )


class _EpisodeActor:
    """Acts for one environment, threading ``predict``'s ``state`` through an episode.

    Policies with ``predict`` get SB3's ``state`` and ``episode_start`` (True at an episode's
    first step), so agents with a context across steps (CDT) keep it; Markov agents hand the
    state back unchanged. A policy with ``record_outcome(state, reward, cost) -> state`` is
    told each step's reward and the cost the environment reports in ``info["cost"]`` (0 when a
    :class:`envs.StripCost` hides it from the agent). Plain callables are called with the
    observation, and with ``episode_start=`` too when they declare that parameter (a
    controller with memory resets it then).
    """

    def __init__(self, policy: Policy, deterministic: bool) -> None:
        self.policy: Any = policy
        self.deterministic = deterministic
        self.has_predict = hasattr(policy, "predict")
        self.record = getattr(policy, "record_outcome", None) if self.has_predict else None
        self.act: Callable[..., np.ndarray] | None = (
            None if self.has_predict else as_callable(policy, deterministic)
        )
        self.wants_start = self.act is not None and _accepts_episode_start(self.act)
        self.start()

    def start(self) -> None:
        """The next call is the first step of a new episode."""
        self.state: Any = None
        self.episode_start = True

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.act is not None:
            if not self.wants_start:
                return self.act(obs)
            action = self.act(obs, episode_start=self.episode_start)
            self.episode_start = False
            return action
        action, self.state = self.policy.predict(
            obs,
            state=self.state,
            episode_start=np.array([self.episode_start]),
            deterministic=self.deterministic,
        )
        self.episode_start = False
        return action

    def observe(self, reward: float, info: dict[str, Any]) -> None:
        """Pass the step's outcome to a policy that counts it (CDT's returns-to-go)."""
        if self.record is not None and self.state is not None:
            self.state = self.record(self.state, float(reward), float(info.get("cost", 0.0)))


def _accepts_episode_start(function: Callable[..., Any]) -> bool:
    """Whether a plain policy declares an ``episode_start`` parameter (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins and C callables: called with obs alone
        return False
    return any(
        p.name == "episode_start" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def _checked(action: Any, space: gym.Space) -> np.ndarray:
    """The policy's action, which must be finite, clipped to a Box space.

    A NaN action is an error: simulators execute it silently and its episode would be scored
    (often as perfectly safe, since nothing moves).
    """
    try:
        values = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the policy returned a non-numeric action: {error}") from None
    if space.shape is not None and values.size != int(np.prod(space.shape)):
        raise ValueError(
            f"the policy returned an action of shape {values.shape}; the action space's "
            f"shape is {space.shape}"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"the policy returned a non-finite action {values!r}")
    return _clip(values, space)


def _finite_outcome(reward: Any, cost: float) -> tuple[float, float]:
    """A step's reward and cost, which must be finite to be summed into a score."""
    reward = float(reward)
    if not (np.isfinite(reward) and np.isfinite(cost)):
        raise ValueError(f"the environment returned a non-finite reward {reward} or cost {cost}")
    return reward, cost


def _clip(action: Any, space: gym.Space) -> np.ndarray:
    action = np.asarray(action, dtype=np.float32).reshape(space.shape or ())
    if isinstance(space, gym.spaces.Box):
        action = np.clip(action, space.low, space.high)
    return action


def evaluate(
    policy: Policy,
    env: gym.Env,
    n_episodes: int = 10,
    seed: int = 0,
    *,
    deterministic: bool = True,
    cost_limit: float | None = None,
    reward_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Run ``n_episodes`` episodes and report returns and costs, raw and normalized.

    Episode ``i`` is reset with ``seed + i``, so two evaluations with the same seed see the same
    start states.

    The normalized return divides by reference returns chosen in this order: ``reward_range``
    when given; else, for an agent of ``safe_agents`` evaluated on the task it was trained on,
    the reference range of its training data (``agent.training_data``: DSRL's reference returns
    for DSRL's data, the data's own return range for locally built data); else the task's (DSRL's
    reference returns). ``report["normalization"]`` says which one was used.

    Args:
        policy: a callable ``obs -> action`` or an object with SB3-style ``predict`` (its
            ``state`` is carried through each episode; see :class:`_EpisodeActor`).
        env: the environment (its costs may be hidden by :class:`envs.StripCost`).
        n_episodes: number of episodes.
        seed: seed of the first episode.
        deterministic: passed to ``predict``.
        cost_limit: overrides the task's cost limit for the normalized cost. On a custom
            environment (no task, no :class:`envs.NormalizedMetrics` wrapper) an agent's
            training data's cost limit is used when this is None.
        reward_range: ``(R_min, R_max)`` overriding the reference returns, e.g.
            ``dataset.reference_range()``.

    Returns:
        A dict with per-episode lists under ``return``, ``cost``, ``length`` and, when the
        environment carries reference values, ``normalized_return`` and ``normalized_cost``;
        their means under ``mean_<key>``; and ``normalization``, ``reward_range`` (the
        reference returns used) when normalized.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if isinstance(env, gym.vector.VectorEnv):
        spec = _vector_task_spec(env)
        reward_range, normalization = _reference_returns(policy, spec, reward_range)
        if spec is None and cost_limit is None:
            cost_limit = _trained_cost_limit(policy)
        task_id = spec.task_id if spec is not None else None
        normalizer = resolve_normalizer(env, task_id, reward_range, cost_limit)
        results = _run_vector(policy, env, n_episodes, seed, deterministic)
        return _report(results, normalizer, normalization)
    act = _EpisodeActor(policy, deterministic)
    spec = find_task_spec(env)
    reward_range, normalization = _reference_returns(policy, spec, reward_range)
    if spec is None and cost_limit is None and find_wrapper(env, NormalizedMetrics) is None:
        cost_limit = _trained_cost_limit(policy)
    normalizer = resolve_normalizer(env, reward_range=reward_range, cost_limit=cost_limit)
    results = {"return": [], "cost": [], "length": []}
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        act.start()
        episode_return = episode_cost = 0.0
        length = 0
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(
                _checked(act(obs), env.action_space)
            )
            reward, cost = _finite_outcome(reward, step_cost(env, info))
            act.observe(reward, info)
            episode_return += reward
            episode_cost += cost
            length += 1
            done = terminated or truncated
        results["return"].append(episode_return)
        results["cost"].append(episode_cost)
        results["length"].append(length)
    return _report(results, normalizer, normalization)


def _report(
    results: dict[str, list[float]], normalizer: Normalizer | None, normalization: str
) -> dict[str, Any]:
    """Per-episode lists, normalized ones where reference values are known, and the means."""
    if normalizer is not None:
        results["normalized_return"] = [
            float(normalizer.normalized_return(value)) for value in results["return"]
        ]
        results["normalized_cost"] = [
            float(normalizer.normalized_cost(value)) for value in results["cost"]
        ]
    report: dict[str, Any] = dict(results)
    for key, values in results.items():
        report[f"mean_{key}"] = float(np.mean(values))
    if normalizer is not None:
        report["normalization"] = normalization
        report["reward_range"] = [normalizer.reward_min, normalizer.reward_max]
    return report


def _vector_task_spec(env: gym.vector.VectorEnv) -> TaskSpec | None:
    """The task of a vector environment's sub-environments (the first one's), if any."""
    try:
        specs = env.get_attr("task_spec")
    except AttributeError:
        return None
    return specs[0] if specs and isinstance(specs[0], TaskSpec) else None


def _run_vector(
    policy: Policy, env: gym.vector.VectorEnv, n_episodes: int, seed: int, deterministic: bool
) -> dict[str, list[float]]:
    """Episodes of a Gymnasium vector environment, ``predict`` called on the whole batch.

    Sub-environment ``i`` starts from seed ``seed + i``; later episodes start where each
    sub-environment's autoreset puts it (reproducible, but not the start states of the
    sequential protocol, whose episode ``k`` is reset with ``seed + k``). The first
    ``n_episodes`` episodes to end are reported, in the order they ended.
    """
    if gym.__version__.split(".")[0] != "0":
        raise ValueError(
            f"vector evaluation follows Gymnasium 0.x's autoreset; gymnasium {gym.__version__} "
            "resets on the next step instead: evaluate one environment at a time"
        )
    count = env.num_envs
    space = env.single_action_space
    has_predict = hasattr(policy, "predict")
    act = None if has_predict else as_callable(policy, deterministic)
    record = getattr(policy, "record_outcome", None) if has_predict else None
    obs, _ = env.reset(seed=[seed + index for index in range(count)])
    state: Any = None
    starts = np.ones(count, dtype=bool)
    running = {key: np.zeros(count) for key in ("return", "cost", "length")}
    results: dict[str, list[float]] = {"return": [], "cost": [], "length": []}
    while len(results["return"]) < n_episodes:
        if act is None:
            predictor: Any = policy
            proposed, state = predictor.predict(
                obs, state=state, episode_start=starts, deterministic=deterministic
            )
        else:
            proposed = [act(row) for row in obs]
        actions = np.stack([_checked(action, space) for action in proposed])
        obs, rewards, terminated, truncated, infos = env.step(actions)
        ended = np.asarray(terminated) | np.asarray(truncated)
        outcomes = [
            _finite_outcome(reward, _vector_step_cost(infos, index, bool(ended[index])))
            for index, reward in enumerate(np.asarray(rewards, dtype=np.float64))
        ]
        step_rewards, step_costs = (np.array(values) for values in zip(*outcomes, strict=True))
        if record is not None and state is not None:
            state = record(state, step_rewards, step_costs)
        running["return"] += step_rewards
        running["cost"] += step_costs
        running["length"] += 1
        for index in np.flatnonzero(ended):
            for key in results:
                results[key].append(float(running[key][index]))
                running[key][index] = 0.0
        starts = ended
    return {key: values[:n_episodes] for key, values in results.items()}


def _vector_step_cost(infos: dict[str, Any], index: int, ended: bool) -> float:
    """Sub-environment ``index``'s cost this step: after an episode's last step Gymnasium
    0.x has already reset it, and the step's own info sits in ``final_info``."""
    if ended and "final_info" in infos:
        info = infos["final_info"][index]
        if isinstance(info, dict) and "cost" in info:
            return float(info["cost"])
    elif "cost" in infos and infos.get("_cost", np.ones(index + 1, bool))[index]:
        return float(infos["cost"][index])
    raise KeyError(
        f"sub-environment {index} reported no info['cost'] (is it a safe-RL environment made "
        "by envs.make?)"
    )


def _reference_returns(
    policy: Policy, spec: TaskSpec | None, reward_range: tuple[float, float] | None
) -> tuple[tuple[float, float] | None, str]:
    """The reference returns for :func:`evaluate` and a label saying what they are."""
    if reward_range is not None:
        return (float(reward_range[0]), float(reward_range[1])), "given reward_range"
    trained_on = getattr(policy, "training_data", None)
    if (
        isinstance(trained_on, dict)
        and trained_on.get("reward_range") is not None
        and (spec is None or trained_on.get("task_id") == spec.task_id)
    ):
        low, high = trained_on["reward_range"]
        label = f"{trained_on['normalization']} of the training data: {trained_on['provenance']}"
        return (float(low), float(high)), label
    if spec is None:
        return None, "the reference returns of the environment's NormalizedMetrics wrapper"
    if spec.dsrl_name is None:
        return None, "the task's reference returns (its shipped dataset's range)"
    return None, "DSRL reference returns (the task's)"


def _trained_cost_limit(policy: Policy) -> float | None:
    """The cost limit of an agent's training data, for a custom environment that has none."""
    trained_on = getattr(policy, "training_data", None)
    if isinstance(trained_on, dict) and trained_on.get("cost_limit") is not None:
        return float(trained_on["cost_limit"])
    return None


def collect_episodes(
    env: gym.Env,
    policy: Policy,
    n_episodes: int,
    seed: int = 0,
    *,
    deterministic: bool = False,
    metadata: dict[str, Any] | None = None,
) -> OfflineDataset:
    """Record ``n_episodes`` episodes of ``policy`` into an :class:`OfflineDataset`.

    Episode ``i`` is reset with ``seed + i``. Actions are recorded clipped to the action space
    (what the simulator executes). The metadata says the data was recorded here (``origin:
    local``, ``builder: envs.collect_episodes``) and holds the task's id and cost limit when
    ``env`` was made by :func:`envs.make`, updated with ``metadata``. It holds no reference
    returns: those of data recorded here are its own range
    (:meth:`OfflineDataset.reference_range`), not the task's DSRL values.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    act = _EpisodeActor(policy, deterministic)
    episodes = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        act.start()
        observations, actions, rewards, costs = [np.asarray(obs, dtype=np.float32)], [], [], []
        done = terminated = False
        while not done:
            action = _checked(act(obs), env.action_space)
            obs, reward, terminated, truncated, info = env.step(action)
            reward, cost = _finite_outcome(reward, step_cost(env, info))
            act.observe(reward, info)
            observations.append(np.asarray(obs, dtype=np.float32))
            actions.append(action)
            rewards.append(reward)
            costs.append(cost)
            done = terminated or truncated
        episodes.append(
            {
                "observations": np.stack(observations),
                "actions": np.stack(actions),
                "rewards": np.asarray(rewards),
                "costs": np.asarray(costs),
                "terminated": bool(terminated),
            }
        )
    info_metadata: dict[str, Any] = {"origin": "local", "builder": "envs.collect_episodes"}
    spec = find_task_spec(env)
    if spec is not None:
        info_metadata.update(task_id=spec.task_id, cost_limit=spec.cost_limit)
    info_metadata.update(metadata or {})
    return OfflineDataset.from_episodes(episodes, metadata=info_metadata)
