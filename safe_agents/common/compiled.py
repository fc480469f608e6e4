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

import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from safe_agents.common.critics import soft_update

# A loss: (inputs...) -> (scalar loss, detached values to log).
LossFunction = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def compiling() -> bool:
    """True while ``torch.compile`` traces: modules then take the plain operations that the
    compiler fuses, not the hand-written CPU kernels that serve eager mode."""
    return bool(torch.compiler.is_compiling())


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
            source`` (buffers copied), as :func:`soft_update`.
        compile: compile the whole update (the first call compiles: seconds to a minute,
            :attr:`compile_seconds`); otherwise each call runs eagerly.

    Compiled and eager updates compute the same mathematics; they differ in floating-point
    rounding (fused kernels) and in the dropout masks (the compiler draws its own random
    numbers from torch's global generator), so a seeded run is reproducible in either mode but
    the two modes' runs differ.
    """

    def __init__(
        self,
        loss: LossFunction,
        optimizer: torch.optim.Optimizer,
        networks: Mapping[str, nn.Module],
        averages: Sequence[tuple[nn.Module, nn.Module, float]] = (),
        *,
        compile: bool = False,
    ) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.averages = list(averages)
        self.compile = compile
        self.compile_seconds: float | None = None
        self._compiled: Callable[..., Any] | None = None
        self._signature: list[tuple[torch.Size, torch.dtype, torch.device]] | None = None
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
            # Constants of the traced program (the rate, which schedules change, is an input).
            group = optimizer.param_groups[0]
            self._adam_constants = (*map(float, group["betas"]), float(group["eps"]))
            self._names = [names[id(p)] for p in params]
            self._averaged = [
                (
                    [*target.parameters()],
                    [*source.parameters()],
                    [*target.buffers()],
                    [*source.buffers()],
                    tau,
                )
                for target, source, tau in self.averages
            ]

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
                soft_update(target, source, tau)
            return {"loss": loss.detach(), **logged}
        if self._compiled is None:
            self._compiled = torch.compile(_own_code(self._update), dynamic=False, fullgraph=True)
            start = time.perf_counter()
            # Random numbers from torch's own kernels (dropout masks): the compiler's are slower
            # on a CPU, and these are the very numbers an eager update would draw.
            with torch._inductor.config.patch(fallback_random=True):
                result = self._run(inputs)
            self.compile_seconds = time.perf_counter() - start
            self._signature = [(x.shape, x.dtype, x.device) for x in inputs]
            return result
        return self._run(inputs)

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        assert self._compiled is not None
        group = self.optimizer.param_groups[0]
        moments, squares, steps = self._adam_state()
        # The rate as a tensor: a schedule's new value each call does not recompile.
        lr = torch.tensor(float(group["lr"]), device=self._params[0].device)
        signature = [(x.shape, x.dtype, x.device) for x in inputs]
        arguments = (self._params, moments, squares, steps, lr, self._averaged, *inputs)
        if signature != self._signature:  # a new shape: torch's guards pick or compile a program
            loss, logged = self._compiled(*arguments)
        else:
            # torch.compile's guards re-check every one of the hundred-odd tensors passed (0.4 ms
            # a call for FISOR's actor, a tenth of its update). The parameters, moments and
            # averaged copies keep their shapes, dtypes and devices for the learner's life, so
            # inputs of the first call's shapes select the first call's program without them.
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                loss, logged = self._compiled(*arguments)
        return {"loss": loss, **logged}

    def _adam_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Adam's moments and step counters, created as ``torch.optim.Adam`` creates them (so
        a compiled and an eager update can continue each other's state)."""
        state = self.optimizer.state
        fused = bool(self.optimizer.param_groups[0].get("fused"))
        for p in self._params:
            if not state[p]:
                step_device = p.device if fused else torch.device("cpu")
                state[p]["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
                state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return (
            [state[p]["exp_avg"] for p in self._params],
            [state[p]["exp_avg_sq"] for p in self._params],
            [state[p]["step"] for p in self._params],
        )

    def _update(
        self,
        params: list[torch.Tensor],
        moments: list[torch.Tensor],
        squares: list[torch.Tensor],
        steps: list[torch.Tensor],
        lr: torch.Tensor,
        averaged: list[Any],
        *inputs: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The traced program: gradients, then Adam as ``torch.optim.Adam`` computes it, then
        the averages."""
        names = self._names

        def loss_of(values: list[torch.Tensor]) -> tuple[torch.Tensor, Any]:
            loss, logged = torch.func.functional_call(
                self._holder, dict(zip(names, values, strict=True)), inputs
            )
            return loss, (loss.detach(), {k: v.detach() for k, v in logged.items()})

        grads, (loss, logged) = torch.func.grad(loss_of, has_aux=True)(params)
        beta1, beta2, eps = self._adam_constants
        with torch.no_grad():
            for p, grad, m, v, step in zip(params, grads, moments, squares, steps, strict=True):
                step.add_(1)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** step.to(p.device)
                bias_correction2 = 1 - beta2 ** step.to(p.device)
                denominator = (v.sqrt() / bias_correction2.sqrt()).add_(eps)
                # addcdiv_(m, denominator, value=-lr / bias_correction1), with a tensor rate
                p.sub_(m / denominator * (lr / bias_correction1))
            for targets, sources, target_buffers, source_buffers, tau in averaged:
                for target, source in zip(targets, sources, strict=True):
                    target.lerp_(source, tau)
                for target, source in zip(target_buffers, source_buffers, strict=True):
                    target.copy_(source)
        return loss, logged


def _own_code(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with a code object of its own.

    torch.compile keeps its compiled programs per code object, at most
    ``torch._dynamo.config.recompile_limit`` (8) of them: a process that builds more learners
    than that (a test session, several agents in one script) would have the ninth refused. A
    copy of the code object per learner gives each its own cache, freed with the learner.
    """
    function = method.__func__  # type: ignore[attr-defined]
    copy = types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    return types.MethodType(copy, method.__self__)  # type: ignore[attr-defined]
