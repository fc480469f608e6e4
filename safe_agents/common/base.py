"""``BaseAgent``: the one agent contract (stable-baselines3 conventions, offline).

Subclasses declare ``name`` and ``config_class`` and implement four hooks:

- ``_build()``: networks and optimizers (``self.optimizers``), from ``self.config``;
- ``_train_step(batch) -> Metrics``: one gradient step (the only place that touches
  optimizers); the dict's keys are logged under ``train/``;
- ``_act(obs, deterministic) -> actions``: actions in ``[-1, 1]`` for standardized observations;
- ``_saved_modules() -> dict[str, nn.Module]``: everything whose weights define the agent.

Optionally ``_check_total_steps(total)`` refuses a training length the algorithm cannot use (DSPO's
stages must leave the policy steps); ``_prepare_dataset(dataset)`` (e.g. BC-Safe keeps safe
episodes; DSPO joins ``self.demos``) and ``_setup_training(dataset)`` (dataset-dependent
constants) run at the start of ``learn_offline``; ``_before_step()`` does work between gradient
steps that is not one (DSPO's generation stage); ``_sample_batch()`` draws each step's minibatch
(default: uniform transitions; sequence models draw trajectory segments);
``_act_in_context(obs, state, episode_start, deterministic)`` lets an agent with a context across
steps (CDT) carry it through ``predict``'s ``state``.

Class flags: ``needs_costs`` (False for agents that never read a cost: BC-All, DSPO) and
``needs_demos`` (True for agents that learn from unlabeled data plus safe demonstrations, passed
as ``learn_offline(..., demos=...)``: DSPO); ``learn_offline`` enforces both before anything
changes, so no agent redefines it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from safe_agents.common import registry, serialization
from safe_agents.common.callbacks import BaseCallback, ProgressBarCallback, as_callback
from safe_agents.common.compiled import LossFunction, Program, Update
from safe_agents.common.config import PAPER, AgentConfig
from safe_agents.common.critics import QEnsemble, stack_member_optimizer_state
from safe_agents.common.data import (
    DatasetLike,
    TransitionSampler,
    check_training_data,
    coerce_dataset,
    describe_training_data,
)
from safe_agents.common.dataset import MAX_ABS_VALUE, OfflineDataset
from safe_agents.common.device import default_threads, get_device, torch_threads
from safe_agents.common.logger import Logger, Metrics, wandb_run_active
from safe_agents.common.networks import ActionScaler, ObservationScaler
from safe_agents.common.seeding import make_generator, new_seed, set_random_seed


class BaseAgent:
    """An offline safe-RL agent with the SB3-style API.

    Args:
        env: an environment to take the observation and action spaces from (not stepped).
        observation_space: a flat ``gymnasium.spaces.Box`` (instead of ``env``).
        action_space: a flat, bounded ``gymnasium.spaces.Box`` (instead of ``env``).
        seed: fixes initialisation, data order and sampling; drawn at random (and kept in
            ``self.seed`` and in saved files) when None.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        preset: named sizes and budget, ``"paper"`` (the defaults: the authors' networks and
            steps) or ``"cpu"`` (reduced networks and steps that train in minutes on 2 cores);
            ``config_class.presets`` lists them. Hyperparameters given beside it override it.
        torch_threads: torch's intra-op threads while training and predicting (restored after).
            None picks by preset: 1 for ``"cpu"`` (small networks gain nothing from a second
            thread and lose up to 25x on a busy machine), torch's own setting otherwise.
        compile: compile each learner's whole update with ``torch.compile`` (the agents with
            ``supports_compile``: FISOR, SPI, DRCORL, DSPO). The first steps compile, seconds to a
            minute (``compile_seconds``); later steps are faster. A seeded run is reproducible,
            and equals the uncompiled run up to float rounding (the same dropout masks).
        **hyperparameters: fields of the algorithm's config dataclass (``config_class``),
            ``cost_limit`` among them for every agent.

    Raises:
        ValueError: unknown or invalid hyperparameters, or unsupported spaces.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AgentConfig]] = AgentConfig
    # True for agents that learn without cost labels: learn_offline(unlabeled, demos=...) (DSPO).
    needs_demos: ClassVar[bool] = False
    # False for agents that never read a cost (BC-All, DSPO): the others refuse a dataset
    # whose costs were stripped, in learn_offline, before anything changes.
    needs_costs: ClassVar[bool] = True
    # True for agents whose updates can be compiled (compile=True): those built on
    # safe_agents.common.compiled.Update.
    supports_compile: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            registry.register_agent(cls)

    def __init__(
        self,
        env: gym.Env[Any, Any] | None = None,
        *,
        observation_space: gym.Space[Any] | None = None,
        action_space: gym.Space[Any] | None = None,
        seed: int | None = None,
        device: str | torch.device = "auto",
        preset: str = PAPER,
        torch_threads: int | None = None,
        compile: bool = False,
        **hyperparameters: Any,
    ) -> None:
        if env is not None:
            observation_space = observation_space or env.observation_space
            action_space = action_space or env.action_space
        if observation_space is None or action_space is None:
            raise ValueError("give an env, or both observation_space and action_space")
        self.observation_space: gym.spaces.Box = _check_box("observation_space", observation_space)
        self.action_space: gym.spaces.Box = _check_box("action_space", action_space)
        self.obs_dim = int(self.observation_space.shape[0])
        self.act_dim = int(self.action_space.shape[0])
        self.config = self.config_class.from_kwargs(preset, **hyperparameters)
        self.preset = preset
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {torch_threads!r}")
        self.torch_threads = torch_threads if torch_threads is not None else default_threads(preset)
        if compile and not self.supports_compile:
            raise ValueError(
                f"{self.name} has no compiled update; compile=True is for: "
                f"{', '.join(_agents_with('supports_compile'))}"
            )
        self.compile = bool(compile)
        self.seed = int(seed) if seed is not None else new_seed()
        self.device = get_device(device)
        self.num_steps = 0
        self.total_steps = self.config.n_steps
        # Where the last learn_offline's data came from (see describe_training_data); saved,
        # and read by envs.evaluate to normalize with that data's reference returns.
        self.training_data: dict[str, Any] | None = None
        # The last learn_offline's demonstrations (agents that need_demos), else None.
        self.demos: OfflineDataset | None = None
        self.logger = Logger()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        # Learners written as compiled.Update (the agents that support_compile), by name, and
        # other functions compiled with compile=True (_compiled_if_asked).
        self.updates: dict[str, Update] = {}
        self.programs: dict[str, Program] = {}
        # Global seeding makes the network initialisation of _build reproducible; afterwards
        # all randomness goes through the agent's own generators.
        set_random_seed(self.seed)
        self.train_generator = make_generator(self.seed, self.device)
        self.act_generator = make_generator(self.seed + 1, self.device)
        self.obs_scaler = ObservationScaler(self.obs_dim, self.config.normalize_observations)
        self.action_scaler = ActionScaler(self.action_space.low, self.action_space.high)
        self._build()
        for module in self._all_modules().values():
            module.to(self.device)

    # ------------------------------------------------------------------ hooks for subclasses
    def _build(self) -> None:
        raise NotImplementedError

    def _train_step(self, batch: Any) -> Metrics:
        raise NotImplementedError

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    def _saved_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _prepare_dataset(self, dataset: OfflineDataset) -> OfflineDataset:
        """The data this algorithm trains on (default: all of it)."""
        return dataset

    def _setup_training(self, dataset: OfflineDataset) -> None:
        """Dataset-dependent set-up before the first step (default: nothing)."""

    def _check_total_steps(self, total: int) -> None:
        """Refuse a training length this algorithm cannot use (default: any length >= 1)."""

    def _before_step(self) -> None:
        """Work between gradient steps that is not one, run before each step draws its batch
        (default: nothing; DSPO generates its synthetic data when its policy stage begins)."""

    def _sample_batch(self) -> Any:
        """The minibatch of one gradient step (default: uniform transitions)."""
        return self.sampler.sample(self.config.batch_size)

    def _act_in_context(
        self,
        obs: torch.Tensor,
        state: Any,
        episode_start: NDArray[np.bool_] | None,
        deterministic: bool,
    ) -> tuple[torch.Tensor, Any]:
        """Actions and the next ``state``; Markov agents ignore the context."""
        return self._act(obs, deterministic), state

    # ------------------------------------------------------------------ public API
    def learn_offline(
        self,
        dataset: DatasetLike,
        n_steps: int | None = None,
        callback: BaseCallback | Sequence[BaseCallback] | None = None,
        progress_bar: bool = False,
        log_dir: str | Path | None = None,
        *,
        demos: DatasetLike | None = None,
        log_interval: int = 1000,
        resume_from: str | Path | None = None,
    ) -> BaseAgent:
        """Train on a fixed dataset for ``n_steps`` gradient steps in total.

        Args:
            dataset: an ``envs.OfflineDataset``, a path to a DSRL-format HDF5 file, a dict of
                arrays with the DSRL names, or a task id.
            n_steps: the total number of gradient steps (default: the config's ``n_steps``).
                A resumed or repeated call continues from ``self.num_steps`` up to this total.
            callback: a callback or list of callbacks (see :mod:`safe_agents.common.callbacks`).
            progress_bar: show a tqdm progress bar.
            log_dir: write ``progress.csv``/``progress.jsonl`` (and tensorboard) there. An
                active wandb run (``wandb.init`` called before) receives the same rows.
            demos: safe demonstrations, for the agents that learn without cost labels
                (``needs_demos``: DSPO), accepted in the same forms as ``dataset``;
                ``dataset.strip_costs(n_safe_demos=10)`` makes both from a labelled dataset.
                Kept in ``self.demos``. Other agents refuse it.
            log_interval: steps between log dumps.
            resume_from: a checkpoint saved by :meth:`save` or ``CheckpointCallback``: its
                weights, optimizer states, generator states and step counter are restored, so
                the run ends exactly as an uninterrupted one with the same seed.

        Returns:
            self.

        Raises:
            ValueError: a dataset or ``demos`` this agent cannot learn from, or an ``n_steps``
                it cannot use; the agent is left as it was.
        """
        with torch_threads(self.torch_threads):
            return self._learn_offline(
                dataset, n_steps, callback, progress_bar, log_dir, demos, log_interval, resume_from
            )

    def _learn_offline(
        self,
        dataset: DatasetLike,
        n_steps: int | None,
        callback: BaseCallback | Sequence[BaseCallback] | None,
        progress_bar: bool,
        log_dir: str | Path | None,
        demos: DatasetLike | None,
        log_interval: int,
        resume_from: str | Path | None,
    ) -> BaseAgent:
        total = n_steps if n_steps is not None else self.config.n_steps
        if isinstance(total, bool) or not isinstance(total, int | np.integer) or total < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {total!r}")
        total = int(total)
        self._check_total_steps(total)
        demos = self._checked_demos(demos)
        if resume_from is not None:
            # Everything is checked before the agent changes: a refused call leaves it as it was.
            contents = serialization.read_agent_file(resume_from)
            saved_steps = _saved_steps(contents.training.get("num_steps"), resume_from)
            if saved_steps > total:
                raise ValueError(
                    f"{resume_from} is at step {saved_steps}, past n_steps={total}: nothing to "
                    "train (load it with load() to use it as it is)"
                )
            self._restore(contents, resume_from)
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        # The planned length of this run, for algorithms with schedules over training.
        self.total_steps = total
        dataset = coerce_dataset(dataset)
        dataset.check_spaces(self.observation_space, self.action_space)
        if self.needs_costs and dataset.costs is None:
            without = _agents_with("needs_costs", False)
            raise ValueError(
                f"{self.name} needs cost labels, and this dataset has none (its costs were "
                f"stripped); the agents that learn without them: {', '.join(without)}"
            )
        self.training_data = describe_training_data(dataset)
        self.demos = demos
        dataset = self._prepare_dataset(dataset)
        if self.num_steps == 0:
            self.obs_scaler.fit(dataset.observations)
        # Algorithms that draw more than one minibatch per step (e.g. a separate actor batch)
        # use self.sampler; it shares the agent's generator, so the data order stays seeded.
        self.sampler = TransitionSampler(dataset, self.device, self.train_generator)
        self._setup_training(dataset)
        if log_dir is not None or wandb_run_active():
            self.logger = Logger(log_dir, resume_step=self.num_steps)
        given = as_callback(callback)
        callbacks: list[BaseCallback] = [given] if given is not None else []
        if progress_bar:
            callbacks.append(ProgressBarCallback())
        for item in callbacks:
            item.init_callback(self)
            item.on_training_start(total)
        for module in self._saved_modules().values():
            module.train()
        interval_start, interval_steps = time.perf_counter(), 0
        try:
            while self.num_steps < total:
                self._before_step()
                metrics = self._train_step(self._sample_batch())
                self.num_steps += 1
                interval_steps += 1
                for key, value in metrics.items():
                    self.logger.record(f"train/{key}", value)
                if self.num_steps % log_interval == 0 or self.num_steps == total:
                    elapsed = time.perf_counter() - interval_start
                    self.logger.record("time/steps_per_second", interval_steps / max(elapsed, 1e-9))
                    if self.compile_seconds is not None:
                        self.logger.record("time/compile_seconds", self.compile_seconds)
                    self.logger.dump(self.num_steps)
                    interval_start, interval_steps = time.perf_counter(), 0
                keep_going = [item.on_step(self.num_steps, metrics) for item in callbacks]
                if not all(keep_going):
                    break
        finally:
            for item in callbacks:
                item.on_training_end()
            for module in self._saved_modules().values():
                module.eval()
        return self

    def _checked_demos(self, demos: DatasetLike | None) -> OfflineDataset | None:
        """``demos`` as a dataset, or None; refused unless the agent ``needs_demos``."""
        if not self.needs_demos:
            if demos is not None:
                raise ValueError(
                    f"{self.name} does not learn from demonstrations; demos= is for the agents "
                    f"that learn without cost labels: {', '.join(_agents_with('needs_demos'))}"
                )
            return None
        if demos is None:
            raise ValueError(
                f"{self.name} learns from unlabeled trajectories plus safe demonstrations: call "
                "learn_offline(unlabeled, demos=demos); dataset.strip_costs(n_safe_demos=10) "
                "makes both from a cost-labelled dataset"
            )
        demos = coerce_dataset(demos)
        demos.check_spaces(self.observation_space, self.action_space)
        return demos

    def predict(
        self,
        observation: NDArray[Any],
        state: Any = None,
        episode_start: NDArray[np.bool_] | None = None,
        deterministic: bool = False,
    ) -> tuple[NDArray[np.float32], Any]:
        """Actions for one observation or a batch of them.

        Args:
            observation: shape ``observation_space.shape`` (one) or ``(N, obs_dim)`` (a batch).
            state: recurrent state (unused by Markov agents; returned unchanged).
            episode_start: which batch entries start a new episode (for agents with context).
            deterministic: the policy's mode instead of a sample (sampling uses the agent's own
                generator, so a seeded agent repeats its stochastic actions too).

        Returns:
            ``(actions, state)``: float32 actions clipped to the action space, shaped like the
            input (one action, or ``(N, act_dim)``).

        Raises:
            ValueError: wrong shape or non-finite values, naming them.
        """
        obs, single = self._check_observation(observation)
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad per operation).
        with torch_threads(self.torch_threads), torch.inference_mode():
            tensor = torch.as_tensor(obs, device=self.device)
            scaled, state = self._act_in_context(
                self.obs_scaler(tensor), state, episode_start, deterministic
            )
            raw = self.action_scaler.denormalize(scaled.clamp(-1.0, 1.0)).cpu().numpy()
        if not np.isfinite(raw).all():  # clamp and clip keep NaN: never hand one onward
            bad = np.flatnonzero(~np.isfinite(raw).all(axis=1))
            raise ValueError(
                f"the policy produced a non-finite action for observation {bad[0]} "
                f"(largest |value| {np.abs(obs[bad[0]]).max():.3g}; far outside the training "
                "data, or diverged weights)"
            )
        # np.clip's value, without its per-call dispatch (a tenth of a small policy's predict).
        low, high = self.action_space.low, self.action_space.high
        actions = np.minimum(np.maximum(raw, low), high).astype(np.float32, copy=False)
        return (actions[0].reshape(self.action_space.shape) if single else actions), state

    def save(self, path: str | Path) -> Path:
        """Write the agent to a zip (config, weights, training state, versions), atomically."""
        weights = {
            f"{module_name}.{key}": tensor.detach().cpu()
            for module_name, module in self._all_modules().items()
            for key, tensor in module.state_dict().items()
        }
        training = {
            "num_steps": torch.tensor(self.num_steps),
            "train_generator": self.train_generator.get_state(),
            "act_generator": self.act_generator.get_state(),
            # Dropout draws from torch's global generator: saved so a resumed run matches.
            "torch_rng_state": torch.get_rng_state(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
        }
        config = {
            "algorithm": self.name,
            "seed": self.seed,
            "preset": self.preset,
            "trained_steps": self.num_steps,
            "observation_space": serialization.box_to_dict(self.observation_space),
            "action_space": serialization.box_to_dict(self.action_space),
            "hyperparameters": self.config.to_dict(),
            "training_data": self.training_data,
        }
        return serialization.write_agent_file(path, config, weights, training)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        torch_threads: int | None = None,
        compile: bool = False,
    ) -> BaseAgent:
        """Rebuild an agent from a file written by :meth:`save`; never executes code from it.

        Called on ``BaseAgent`` it rebuilds whichever algorithm the file holds. The file's
        generator states are restored, torch's global generator included (dropout draws from
        it), so ``load(checkpoint).learn_offline(...)`` continues exactly as the saved run would
        on the same kind of device. A file saved on a GPU loads on a CPU and the other way round;
        its agent's own generators then restart from the seed.

        Args:
            path: the saved zip.
            device: where the networks go (``"auto"``: CUDA when available).
            torch_threads: as the constructor's; None picks by the preset the file records.
            compile: as the constructor's (a file records no choice: it is how to compute).

        Raises:
            serialization.AgentLoadError: not a saved agent, a truncated or tampered file, or
                an agent of another algorithm.
        """
        contents = serialization.read_agent_file(path)
        config = contents.config
        agent_class = registry.get_agent_class(config["algorithm"]) if cls is BaseAgent else cls
        # The hyperparameters are complete; the preset is a label (and picks the threads).
        preset = config.get("preset", PAPER)
        preset = preset if isinstance(preset, str) else PAPER
        if torch_threads is None:
            torch_threads = default_threads(preset)
        if config["algorithm"] != agent_class.name:
            raise serialization.AgentLoadError(
                f"{path} holds a {config['algorithm']!r} agent, not {agent_class.name!r}; load "
                "it with safe_agents.load_agent(path) or that algorithm's class"
            )
        try:
            agent = agent_class(
                observation_space=serialization.box_from_dict(config["observation_space"]),
                action_space=serialization.box_from_dict(config["action_space"]),
                seed=config["seed"],
                device=device,
                torch_threads=torch_threads,
                compile=compile,
                **config["hyperparameters"],
            )
            agent.training_data = check_training_data(config.get("training_data"))
        except (TypeError, ValueError, KeyError) as error:
            raise serialization.AgentLoadError(f"{path}: invalid config.json: {error}") from error
        agent.preset = preset
        agent._restore(contents, path)
        return agent

    @property
    def compile_seconds(self) -> float | None:
        """Seconds the first compiled updates took (compiling included); None before the first
        step, or without ``compile=True``."""
        compiled: list[Update | Program] = [*self.updates.values(), *self.programs.values()]
        times = [c.compile_seconds for c in compiled if c.compile_seconds is not None]
        return sum(times) if times else None

    def _compiled_if_asked(
        self, name: str, function: Callable[..., Any], modules: Sequence[nn.Module] = ()
    ) -> Callable[..., Any]:
        """``function`` as a compiled :class:`~safe_agents.common.compiled.Program` (kept in
        ``self.programs[name]``) with ``compile=True``, else ``function`` itself. ``modules``:
        the networks whose train or eval mode the function depends on."""
        if not self.compile:
            return function
        self.programs[name] = Program(function, modules, state=self._hyperparameter_values)
        return self.programs[name]

    def _make_update(
        self,
        loss: LossFunction,
        optimizer: torch.optim.Optimizer,
        networks: dict[str, nn.Module],
        averages: Sequence[tuple[nn.Module, nn.Module, float | Callable[[], float]]] = (),
    ) -> Update:
        """A learner's :class:`~safe_agents.common.compiled.Update`, compiled with
        ``compile=True``; its compiled program follows changes to ``self.config``."""
        return Update(
            loss,
            optimizer,
            networks,
            averages,
            compile=self.compile,
            state=self._hyperparameter_values,
        )

    def _hyperparameter_values(self) -> tuple[Any, ...]:
        """The config's values: a compiled program reads some, so a change is noticed."""
        return tuple(vars(self.config).values())

    def parameters_dict(self) -> dict[str, torch.Tensor]:
        """Every saved tensor by name (for comparing two agents)."""
        return {
            f"{module_name}.{key}": tensor
            for module_name, module in self._all_modules().items()
            for key, tensor in module.state_dict().items()
        }

    # ------------------------------------------------------------------ internals
    def _all_modules(self) -> dict[str, nn.Module]:
        return {
            "obs_scaler": self.obs_scaler,
            "action_scaler": self.action_scaler,
            **self._saved_modules(),
        }

    def _restore(self, contents: serialization.AgentFile, path: str | Path) -> None:
        config = contents.config
        if config["algorithm"] != self.name:
            raise serialization.AgentLoadError(
                f"{path} holds a {config['algorithm']!r} agent, not {self.name!r}"
            )
        if config["hyperparameters"] != self.config.to_dict() or config["seed"] != self.seed:
            raise serialization.AgentLoadError(
                f"{path} was saved with other hyperparameters or seed than this agent's; "
                f"resume it with {type(self).__name__}.load(path).learn_offline(...)"
            )
        modules = self._all_modules()
        grouped: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
        for key, tensor in contents.weights.items():
            module_name, _, parameter = key.partition(".")
            if module_name not in grouped:
                raise serialization.AgentLoadError(f"{path}: unexpected weights {key!r}")
            grouped[module_name][parameter] = tensor
        for module_name, module in modules.items():
            try:
                module.load_state_dict(grouped[module_name], strict=True)
            except RuntimeError as error:
                raise serialization.AgentLoadError(
                    f"{path}: weights of {module_name!r} do not match the network: {error}"
                ) from error
        training = contents.training
        self.num_steps = _saved_steps(training.get("num_steps"), path)
        try:
            for generator, key in (
                (self.train_generator, "train_generator"),
                (self.act_generator, "act_generator"),
            ):
                state = training[key]
                # A CUDA generator's state is not a CPU one's: a file from the other kind of
                # device keeps this agent's generators as seeded (exact resumption needs the
                # same kind of device anyway: its kernels round differently).
                if (
                    isinstance(state, torch.Tensor)
                    and state.dtype == torch.uint8
                    and state.numel() != generator.get_state().numel()
                    and state.numel() in _GENERATOR_STATE_SIZES
                ):
                    continue
                generator.set_state(state)
            torch.set_rng_state(training["torch_rng_state"])
            if set(training["optimizers"]) != set(self.optimizers):
                raise KeyError(f"optimizers {sorted(training['optimizers'])}")
            ensembles = [
                network
                for module in modules.values()
                for network in module.modules()
                if isinstance(network, QEnsemble)
            ]
            for name, optimizer in self.optimizers.items():
                # The file's settings replace the optimizer's, which implementation included:
                # keep this machine's (a fused kernel, or the file's device may lack one).
                implementation = [
                    {key: group[key] for key in _IMPLEMENTATION_FLAGS if key in group}
                    for group in optimizer.param_groups
                ]
                # Files from before the batched ensembles list their members one by one.
                saved = stack_member_optimizer_state(
                    training["optimizers"][name], optimizer, ensembles
                )
                optimizer.load_state_dict(saved)
                for group, flags in zip(optimizer.param_groups, implementation, strict=True):
                    group.update(flags)
                _check_optimizer_state(name, optimizer)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as error:
            raise serialization.AgentLoadError(
                f"{path}: invalid training state: {error}"
            ) from error

    def _check_observation(self, observation: Any) -> tuple[NDArray[np.float32], bool]:
        try:
            obs = np.asarray(observation, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"observation must be numeric: {error}") from None
        shape = tuple(self.observation_space.shape)
        if obs.shape == shape:
            obs, single = obs.reshape(1, self.obs_dim), True
        elif obs.ndim == len(shape) + 1 and obs.shape[1:] == shape:
            obs, single = obs.reshape(len(obs), self.obs_dim), False
        else:
            raise ValueError(
                f"observation has shape {obs.shape}; expected {shape} or (batch, *{shape})"
            )
        if not len(obs):
            raise ValueError("observation batch is empty")
        # One reduction decides the usual case (False for NaN too); the rows are found after.
        if np.abs(obs).max() <= MAX_ABS_VALUE:
            return obs, single
        bad = np.flatnonzero(~np.isfinite(obs).all(axis=1))
        if bad.size:
            raise ValueError(f"observation has non-finite values (row {bad[0]})")
        huge = np.flatnonzero((np.abs(obs) > MAX_ABS_VALUE).any(axis=1))
        if huge.size:  # the networks' float32 arithmetic overflows on such inputs
            raise ValueError(
                f"observation has a value of magnitude {np.abs(obs[huge[0]]).max():.3g} "
                f"(row {huge[0]}), beyond {MAX_ABS_VALUE:g}"
            )
        return obs, single

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, steps={self.num_steps}, {self.config})"


# The sizes of a torch.Generator's state on a CPU (Mersenne Twister) and on CUDA (Philox seed
# and offset).
_GENERATOR_STATE_SIZES = (torch.Generator().get_state().numel(), 16)

# Optimizer settings that choose an implementation, not the mathematics of the update.
_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def _agents_with(flag: str, value: bool = True) -> list[str]:
    """The registered agents whose class sets ``flag`` (``needs_demos``, ``needs_costs``) to
    ``value``."""
    agents = registry.list_agents()
    return [name for name in agents if getattr(registry.get_agent_class(name), flag) == value]


def _saved_steps(steps: Any, path: str | Path) -> int:
    """A checkpoint's step counter: an integer >= 0 (an int or an integer tensor).

    Raises:
        serialization.AgentLoadError: anything else (a tampered or foreign file).
    """
    if isinstance(steps, torch.Tensor) and steps.numel() == 1 and not steps.is_floating_point():
        steps = int(steps.item())
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise serialization.AgentLoadError(
            f"{path}: invalid training state: num_steps must be an integer >= 0, got {steps!r}"
        )
    return steps


def _check_optimizer_state(name: str, optimizer: torch.optim.Optimizer) -> None:
    """Every per-parameter state tensor (Adam's moments) must have its parameter's shape and be
    finite, its step counter and second moments >= 0 too, and the group settings (learning
    rate, betas, eps, weight decay) finite: ``load_state_dict`` checks none of it, and a bad
    value would turn every weight into NaN at the first resumed step. A first moment may be
    negative, of a scalar parameter too (COptiDICE's dual variable)."""
    for group in optimizer.param_groups:
        for key, value in group.items():
            for number in value if isinstance(value, tuple | list) else (value,):
                if isinstance(number, float | torch.Tensor) and not bool(
                    torch.isfinite(torch.as_tensor(number)).all()
                ):
                    raise ValueError(f"optimizer {name!r}: setting {key!r} is not finite")
        for parameter in group["params"]:
            for key, value in optimizer.state.get(parameter, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() > 0 and value.shape != parameter.shape:
                    raise ValueError(
                        f"optimizer {name!r}: state {key!r} has shape {tuple(value.shape)} "
                        f"for a parameter of shape {tuple(parameter.shape)}"
                    )
                if not bool(torch.isfinite(value).all()):
                    raise ValueError(f"optimizer {name!r}: state {key!r} is not finite")
                if (key == "step" or key.endswith("_sq")) and bool((value < 0).any()):
                    raise ValueError(f"optimizer {name!r}: state {key!r} is negative")


def _check_box(name: str, space: gym.Space[Any]) -> gym.spaces.Box:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"{name} must be a flat gymnasium.spaces.Box, got {space}")
    return space
