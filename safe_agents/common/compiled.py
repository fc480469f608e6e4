"""One learner's whole update as a single compiled program (``compile=True`` on an agent).

Eager PyTorch dispatches every small operation of a step on its own: for the ``cpu`` preset's
networks that costs more than the arithmetic (a FISOR actor update is some 300 operations of
a few microseconds each around 0.8 ms of matrix products). JAX avoids it by compiling the whole
update; :class:`Update` does the same with ``torch.compile``: the loss, its gradients
(``torch.func.grad``), Adam and the Polyak averages of the learner's slow copies become one
program whose elementwise work is fused.

The same object runs eagerly when not compiled (``loss.backward()``, ``optimizer.step()``,
:func:`~safe_agents.common.critics.soft_update`), so an agent writes each update once.
"""

from __future__ import annotations

import itertools
import math
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from safe_agents.common.critics import soft_update

# A loss: (inputs...) -> (scalar loss, detached values to log).
LossFunction = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


class _Holder(nn.Module):
    """The learner's networks as children, so ``functional_call`` can swap their parameters."""

    def __init__(self, networks: Mapping[str, nn.Module], loss: LossFunction) -> None:
        super().__init__()
        self.networks = nn.ModuleDict(dict(networks))
        self.loss = loss

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss(*inputs)


class Update:
    """A learner's update: ``loss`` minimized by ``optimizer`` (Adam), then Polyak averages.

    Args:
        loss: ``loss(*inputs) -> (loss, logged)``, computed with ``networks`` (it may close over
            them: the compiled update swaps their parameters in place of the originals).
            Randomness should come in through ``inputs`` (drawn by the agent's generator);
            dropout inside ``networks`` draws from torch's global generator either way.
        optimizer: a ``torch.optim.Adam`` over exactly the parameters of ``networks`` that
            require gradients, one parameter group, no weight decay, AMSGrad or maximize. Its
            state is the compiled update's (saved, loaded and resumed as usual), and its
            group's ``lr`` is read at every call.
        networks: the networks the optimizer trains, by name.
        averages: ``(target, source, tau)``: after the step ``target <- (1 - tau) target + tau
            source`` (buffers copied), as :func:`soft_update`; ``tau`` a number or a function
            that returns it (read at every call, e.g. from the agent's config).
        compile: compile the whole update (the first call compiles: seconds to a minute,
            :attr:`compile_seconds`); otherwise each call runs eagerly.
        state: what else the loss reads that may change between calls (the agent's
            hyperparameters): a function whose value, when it changes, makes the compiled
            update check torch.compile's guards again (see :class:`Program`).

    Compiled and eager updates compute the same mathematics, with the same dropout masks
    (torch's own random kernels, in the eager order); they differ in floating-point rounding
    (fused kernels), so a seeded run is reproducible in either mode, and the two modes' runs
    drift apart as any two runs with different rounding do.
    """

    def __init__(
        self,
        loss: LossFunction,
        optimizer: torch.optim.Optimizer,
        networks: Mapping[str, nn.Module],
        averages: Sequence[tuple[nn.Module, nn.Module, float | Callable[[], float]]] = (),
        *,
        compile: bool = False,
        state: Callable[[], Any] | None = None,
    ) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.averages = list(averages)
        self.compile = compile
        self._program: Program | None = None
        self._trained = [p for group in optimizer.param_groups for p in group["params"]]
        if compile:
            self._check_optimizer()
            self._holder = _Holder(networks, loss)
            names = {id(p): name for name, p in self._holder.named_parameters()}
            params = list(optimizer.param_groups[0]["params"])
            trained = {id(p) for p in params}
            missing = [name for key, name in names.items() if key not in trained]
            frozen = [p for p in self._holder.parameters() if not p.requires_grad]
            if any(id(p) not in names for p in params) or len(missing) > len(frozen):
                raise ValueError(
                    "a compiled update needs an optimizer over exactly its networks' trainable "
                    f"parameters (not in the optimizer: {missing[:3]})"
                )
            self._params = params
            self._adam_constants = self._read_adam_constants()
            self._names = [names[id(p)] for p in params]
            self._shapes = [p.shape for p in params]
            self._sizes = [p.numel() for p in params]
            self._slices = [self._slice_of(source) for _, source, _ in self.averages]
            self._flat: _Flat | None = None
            # Loading an optimizer state replaces its tensors: gather them again.
            optimizer.register_load_state_dict_post_hook(lambda _: self._forget_flat())
            self._program = Program(
                self._update,
                list(networks.values()),
                state=lambda: (self._adam_constants, state() if state is not None else None),
            )

    def _slice_of(self, source: nn.Module) -> tuple[int, int]:
        """Where ``source``'s parameters lie in the flat parameter vector (they must be
        consecutive in the optimizer's list, in ``source.parameters()``'s order)."""
        position = {id(p): k for k, p in enumerate(self._params)}
        indices = [position.get(id(p), -1) for p in source.parameters()]
        if -1 in indices or indices != list(range(indices[0], indices[0] + len(indices))):
            raise ValueError(
                "a compiled update averages networks whose parameters are consecutive in its "
                "optimizer's list"
            )
        offsets = [0, *itertools.accumulate(self._sizes)]
        return offsets[indices[0]], offsets[indices[-1] + 1]

    def _forget_flat(self) -> None:
        self._flat = None

    def _read_adam_constants(self) -> tuple[float, float, float]:
        """Adam's betas and eps, constants of the traced program (the rate, which schedules
        change, is an input)."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = (float(beta) for beta in group["betas"])
        return beta1, beta2, float(group["eps"])

    def _check_optimizer(self) -> None:
        optimizer = self.optimizer
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            raise ValueError("a compiled update takes a torch.optim.Adam with one parameter group")
        group = optimizer.param_groups[0]
        for option in ("weight_decay", "amsgrad", "maximize"):
            if group.get(option):
                raise ValueError(f"a compiled update does not implement Adam's {option}")

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on ``inputs``; returns the loss (key ``"loss"``) and the logged values,
        detached."""
        if not self.compile:
            loss, logged = self.loss(*inputs)
            self.optimizer.zero_grad()
            # Gradients for this learner's parameters only: other networks the loss reads (a
            # critic scoring the actor's actions) are constants of it.
            loss.backward(inputs=self._trained)
            self.optimizer.step()
            for target, source, tau in self.averages:
                soft_update(target, source, _rate(tau))
            return {"loss": loss.detach(), **logged}
        return self._run(inputs)

    @property
    def compile_seconds(self) -> float | None:
        """Seconds the first compiled call took (None before it, or uncompiled)."""
        return self._program.compile_seconds if self._program is not None else None

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        assert self._program is not None
        flat = self._gathered()
        # The rate as a tensor: a schedule's new value each call does not recompile.
        lr = torch.tensor(
            float(self.optimizer.param_groups[0]["lr"]),
            dtype=torch.float64,
            device=flat.params.device,
        )
        loss, logged = self._program(
            flat.params, flat.moments, flat.squares, flat.steps, lr, flat.targets, *inputs
        )
        # The program wrote into the vectors, which leaves the views' version counters as they
        # were: bumped, so whatever is keyed on them (the noise network's cached timestep
        # embedding, autograd's in-place checks) sees the new values.
        torch.autograd.graph.increment_version(flat.views)
        return {"loss": loss, **logged}

    def _gathered(self) -> _Flat:
        """The learner's tensors gathered into one vector each: the parameters, Adam's moments
        and step counters, every averaged copy.

        Each parameter (and moment, and copy's parameter) becomes a view into its vector, so
        the networks, ``optimizer.state_dict()`` and saving see them as before, while the
        compiled program updates a handful of tensors instead of a hundred (each updated input
        costs the program a copy and a check per call). Gathered again when the optimizer's
        state is loaded or a tensor no longer lies in its vector (a network moved).
        """
        flat = self._flat
        if flat is not None and all(
            _views_of(vector, first, last) for vector, first, last in flat.ends
        ):
            return flat
        self._adam_constants = self._read_adam_constants()
        state = self.optimizer.state
        for p in self._params:
            if not state[p]:  # as torch.optim.Adam creates it on its first step
                step_device = p.device if self.optimizer.param_groups[0].get("fused") else "cpu"
                state[p]["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
                state[p]["exp_avg"] = torch.zeros_like(p)
                state[p]["exp_avg_sq"] = torch.zeros_like(p)
        steps = [float(state[p]["step"]) for p in self._params]
        if len(set(steps)) != 1:
            raise ValueError(f"the optimizer's parameters have taken different steps: {steps}")
        with torch.no_grad():
            params = _gather(self._params)
            moments = _gather([state[p]["exp_avg"] for p in self._params])
            squares = _gather([state[p]["exp_avg_sq"] for p in self._params])
            for p, view in zip(self._params, _views(params, self._shapes), strict=True):
                p.data = view
            for p, moment, square in zip(
                self._params,
                _views(moments, self._shapes),
                _views(squares, self._shapes),
                strict=True,
            ):
                state[p]["exp_avg"], state[p]["exp_avg_sq"] = moment, square
            step_vector = torch.stack([state[p]["step"] for p in self._params])
            for k, p in enumerate(self._params):
                state[p]["step"] = step_vector[k]
            targets = []
            views = list(self._params)
            ends = [(params, self._params[0], self._params[-1])]
            for target, _, _ in self.averages:
                copies = list(target.parameters())
                vector = _gather(copies)
                for copy, view in zip(
                    copies, _views(vector, [c.shape for c in copies]), strict=True
                ):
                    copy.data = view
                targets.append(vector)
                views.extend(copies)
                ends.append((vector, copies[0], copies[-1]))
        self._flat = _Flat(params, moments, squares, step_vector, targets, views, ends)
        return self._flat

    def _update(
        self,
        params: torch.Tensor,
        moments: torch.Tensor,
        squares: torch.Tensor,
        steps: torch.Tensor,
        lr: torch.Tensor,
        targets: list[torch.Tensor],
        *inputs: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The traced program: gradients, then Adam as ``torch.optim.Adam`` computes it, then
        the averages, each on one vector."""

        def loss_of(vector: torch.Tensor) -> tuple[torch.Tensor, Any]:
            views = _views(vector, self._shapes)
            loss, logged = torch.func.functional_call(
                self._holder, dict(zip(self._names, views, strict=True)), inputs
            )
            return loss, (loss.detach(), {k: v.detach() for k, v in logged.items()})

        grad, (loss, logged) = torch.func.grad(loss_of, has_aux=True)(params)
        beta1, beta2, eps = self._adam_constants
        with torch.no_grad():
            steps.add_(1)
            # Every parameter has taken the same steps. The corrections in double precision,
            # as torch.optim.Adam computes them (in Python numbers).
            step = steps[0].to(device=params.device, dtype=torch.float64)
            moments.lerp_(grad, 1 - beta1)
            squares.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step).sqrt().to(params.dtype)
            step_size = (lr / bias_correction1).to(params.dtype)  # lr: double already
            denominator = (squares.sqrt() / bias_correction2_sqrt).add_(eps)
            # addcdiv_(m, denominator, value=-step_size), with a tensor step size
            params.sub_(moments / denominator * step_size)
            for target, (start, stop), (_, _, tau) in zip(
                targets, self._slices, self.averages, strict=True
            ):
                target.lerp_(params[start:stop], _rate(tau))
        return loss, logged


def _rate(tau: float | Callable[[], float]) -> float:
    return tau() if callable(tau) else tau


class _Flat(NamedTuple):
    """A learner's tensors as vectors (see :meth:`Update._gathered`)."""

    params: torch.Tensor
    moments: torch.Tensor
    squares: torch.Tensor
    steps: torch.Tensor
    targets: list[torch.Tensor]
    views: list[torch.Tensor]  # every parameter that is a view into one of them
    ends: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (vector, first, last view)


def _gather(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _views(vector: torch.Tensor, shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
    """``vector`` cut into consecutive pieces of ``shapes``."""
    pieces = vector.split([math.prod(shape) for shape in shapes])
    return [piece.view(shape) for piece, shape in zip(pieces, shapes, strict=True)]


def _views_of(vector: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> bool:
    """Whether ``first`` and ``last`` still lie at the two ends of ``vector``'s memory."""
    end = vector.data_ptr() + vector.numel() * vector.element_size()
    return (
        first.data_ptr() == vector.data_ptr()
        and last.data_ptr() + last.numel() * last.element_size() == end
    )


class Program:
    """``function`` compiled by ``torch.compile`` into one program on its first call.

    Later calls that look like the first (gradient and inference modes, ``modules``' train or
    eval modes, the shapes, dtypes and devices of the tensor arguments, one level into lists,
    and the value of ``state()``: the hyperparameters the function reads) run that program
    without torch.compile's guard checks, which re-check everything the
    program read (0.3 ms a call for FISOR's actor update, a tenth of it): nothing else it
    depends on changes between such calls. Any other call goes through the guards, which pick
    a program or compile one.

    The first call's random numbers (dropout masks) come from torch's own kernels, in the order
    an eager call would draw them: the compiler's own are slower on a CPU.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        modules: Sequence[nn.Module] = (),
        state: Callable[[], Any] | None = None,
    ) -> None:
        self.function = function
        self.modules = list(modules)
        self.state = state
        self.compile_seconds: float | None = None
        self._compiled: Callable[..., Any] | None = None
        self._first: tuple[Any, ...] | None = None

    def _signature(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        def describe(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.shape, value.dtype, value.device
            if isinstance(value, list | tuple):
                return tuple(describe(item) for item in value)
            return type(value)

        return (
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            tuple(module.training for module in self.modules),
            describe(args),
            self.state() if self.state is not None else None,
        )

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            self._compiled = torch.compile(_own_code(self.function), dynamic=False, fullgraph=True)
            start = time.perf_counter()
            try:
                with torch._inductor.config.patch(fallback_random=True):
                    result = self._compiled(*args)
            except Exception as error:
                self._compiled = None
                raise RuntimeError(
                    f"compile=True: torch.compile failed on {self.function.__name__} "
                    f"({type(error).__name__}: {str(error).strip().splitlines()[0]}). On a CPU it "
                    "needs a C++ compiler (gcc or clang); without compile=True the agent trains "
                    "and acts the same, eagerly"
                ) from error
            self.compile_seconds = time.perf_counter() - start
            self._first = self._signature(args)
            return result
        if self._signature(args) == self._first:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self._compiled(*args)
        with torch._inductor.config.patch(fallback_random=True):
            return self._compiled(*args)


def _own_code(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (or bound method) with a code object of its own.

    torch.compile keeps its compiled programs per code object, at most
    ``torch._dynamo.config.recompile_limit`` (8) of them: a process that builds more learners
    than that (a test session, several agents in one script) would have the ninth refused. A
    copy of the code object per program gives each its own cache, freed with it.
    """
    bound = getattr(function, "__self__", None)
    plain = getattr(function, "__func__", function)
    copy = types.FunctionType(
        plain.__code__.replace(),
        plain.__globals__,
        plain.__name__,
        plain.__defaults__,
        plain.__closure__,
    )
    return copy if bound is None else types.MethodType(copy, bound)
