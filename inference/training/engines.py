"""Training engines: how one stochastic-gradient step on the objective is taken (``train.engine``).

===========  =====================================================================================
``fast``     The default. ``objective.differentiable_loss(model, guide, batch)`` (Pyro's
             ``ELBOModule`` pattern), ``backward``, and one multi-tensor (``foreach``) torch
             optimizer over all of ``model.parameters()``. Pyro's and torch.distributions' argument
             validation is off inside the epoch (the trainer's dry run, ``prepare_objective``,
             validated the model and guide once with it on, and the data was checked on load),
             and the loss stays on the device: the host reads it once per log interval.
``graphed``  The fast step captured in CUDA graphs (CUDA only, Adam only): after a first eager
             step of a batch shape, a second runs eagerly on a side stream and the step is
             captured; every later batch of that shape is copied into the graph's input buffers
             and the whole step (model, guide, objective, ``backward``, Adam) replays with no
             Python at all. On a GPU the Pyro bookkeeping of a small network's step costs more
             than its kernels; replay removes it. A change of learning rate, KL weight or batch
             weight runs eagerly and re-captures; an objective that cannot be captured (one that
             reads a tensor back to the host) falls back to eager steps, with one warning.
``svi``      Pyro's reference path: :class:`pyro.infer.SVI` with a :class:`pyro.optim.PyroOptim`
             (one torch optimizer per parameter), validation as configured, and the loss read
             to the host (``SVI.step`` returns a float) every step.
===========  =====================================================================================

All three compute the same estimator and the same update — the tests check that the ELBO
trajectories of ``fast`` and ``svi`` agree for ``elbo``, ``meanfield`` and ``iwae``, and that
``graphed``'s bookkeeping replays ``fast``'s — so ``svi`` is the path to fall back on
for a model that misbehaves under the fast one (for example one whose parameters are created
inside ``model()``, which only Pyro's parameter capture sees).

An engine is also what checkpoints store as "the optimizer": ``state_dict`` /
``load_state_dict`` carry the optimizer's state and the engine's name, so a checkpoint resumes
under the engine that wrote it (``fast`` and ``graphed`` read each other's) or fails with a
message saying which engine to use. An objective's own network (``elbo=aae``'s critic,
:attr:`~aevb.inference.objectives.Objective.critic`) is training state, not model: ``fast`` and
``graphed`` step it with the model's parameters and the engine's state carries it, so a resume
restores it and a loaded model has none.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer import SVI

from aevb.inference.errors import ConfigError
from aevb.inference.objectives import Objective
from aevb.inference.threads import apply_share
from aevb.inference.training.distributed import SINGLE, DistContext
from aevb.inference.training.optim import (
    OPTIMIZERS,
    build_optimizer,
    set_hyperparameters,
    set_lr,
)
from aevb.models.base import Batch, LatentVariableModel
from aevb.models.registry import Registry


class Engine:
    """One way of taking training steps for ``model`` under ``objective``.

    :meth:`step` returns the detached loss of its batches (on the device; reading it is the
    caller's choice); :meth:`epoch` is the context an epoch of steps runs in.
    """

    name = "engine"

    def __init__(self, model: LatentVariableModel, objective: Objective, optimizer: str,
                 lr: float, weight_decay: float = 0.0, ctx: DistContext = SINGLE,
                 options: dict | None = None):
        self.model, self.objective, self.ctx = model, objective, ctx

    def set_lr(self, lr: float) -> None:
        """The learning rate from now on (a schedule's, at an epoch's start)."""
        raise ConfigError(f"train.engine={self.name} has no learning-rate schedule; use "
                          f"train.engine=fast")

    def set_hyperparameters(self, lr: float, weight_decay: float,
                            options: dict | None = None) -> None:
        """The optimizer's settings from now on (a resume's; the checkpoint restored the saved
        ones). An engine whose optimizers take them from their saved state only leaves them
        (:mod:`aevb.resume` refuses to change them there)."""

    def step(self, *batches: Batch, weight: float = 1.0) -> torch.Tensor:
        """One update on ``weight`` times the sum of the objective over ``batches`` (M2 pairs an
        unlabelled batch with a labelled one; a data-parallel rank weights its shard, see
        :func:`aevb.inference.training.distributed.shard_batches`)."""
        raise NotImplementedError

    def epoch(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def optimizer_state(self) -> Any:
        raise NotImplementedError

    def load_optimizer_state(self, state: Any) -> None:
        raise NotImplementedError

    # the checkpoint interface (what save_checkpoint / restore call on "the optimizer")
    def state_dict(self) -> dict:
        critic = self.objective.critic
        return {"engine": self.name, "state": self.optimizer_state(),
                **({"critic": critic.state_dict()} if critic is not None else {})}

    #: engines whose saved optimizer state this one loads (the same torch optimizer)
    reads: frozenset[str] = frozenset()

    def load_state_dict(self, payload: dict) -> None:
        if "engine" not in payload:  # a plain torch optimizer state (older checkpoints)
            payload = {"engine": "fast", "state": payload}
        if payload["engine"] != self.name and payload["engine"] not in self.reads:
            raise ConfigError(f"this checkpoint's optimizer state was written by "
                              f"train.engine={payload['engine']}; resume with "
                              f"train.engine={payload['engine']}")
        critic = self.objective.critic
        if (critic is not None) != ("critic" in payload):
            raise ConfigError(f"this checkpoint was written {'without' if critic else 'with'} "
                              f"an objective's critic (elbo=aae, info_divergence=adversarial); "
                              f"resume it with the objective it was trained with")
        if critic is not None:
            critic.load_state_dict(payload["critic"])
        self.load_optimizer_state(payload["state"])


ENGINES: Registry[type[Engine]] = Registry("engine")


class ObjectiveModule(torch.nn.Module):
    """The objective of ``model`` as an ``nn.Module`` (Pyro's ``ELBOModule`` pattern), so that
    :class:`~torch.nn.parallel.DistributedDataParallel` can wrap it: ``forward(*batches,
    weight)`` is ``weight`` times the summed loss, and the module's parameters are the model's
    (networks of the model and the guide), then the objective's critic's, if it has one."""

    def __init__(self, model: LatentVariableModel, objective: Objective):
        super().__init__()
        self.latent_model, self.objective = model, objective
        if objective.critic is not None:
            self.critic = objective.critic

    def forward(self, *batches: Batch, weight: float = 1.0) -> torch.Tensor:
        model, guide = self.latent_model.model, self.latent_model.guide
        loss = self.objective.differentiable_loss(model, guide, batches[0])
        for b in batches[1:]:
            loss = loss + self.objective.differentiable_loss(model, guide, b)
        return loss * weight if weight != 1.0 else loss


@ENGINES.register("fast")
class FastEngine(Engine):
    """``differentiable_loss`` + ``backward`` + a foreach torch optimizer; validation off.
    Across ranks the loss module is wrapped in DistributedDataParallel, which averages the
    gradients during ``backward``."""

    name = "fast"
    reads = frozenset({"graphed"})
    #: extra keyword arguments of the torch optimizer
    optimizer_options: dict = {}

    def __init__(self, model, objective, optimizer, lr, weight_decay=0.0, ctx=SINGLE,
                 options=None):
        super().__init__(model, objective, optimizer, lr, weight_decay, ctx, options)
        self.loss: torch.nn.Module = ObjectiveModule(model, objective)
        if ctx.active:
            from torch.nn.parallel import DistributedDataParallel

            on_gpu = next(model.parameters()).device.type == "cuda"
            self.loss = DistributedDataParallel(
                self.loss, device_ids=[ctx.local_rank] if on_gpu else None,
                gradient_as_bucket_view=True)
        self.optimizer = build_optimizer(optimizer, self.loss.parameters(), lr, weight_decay,
                                         foreach=True,
                                         **(options or {}) | self.optimizer_options)
        # one process: no module hooks to run, so skip nn.Module.__call__'s dispatch
        self._loss = self.loss if ctx.active else self.loss.forward

    def step(self, *batches: Batch, weight: float = 1.0) -> torch.Tensor:
        apply_share()
        return self._update(batches, weight)

    def _update(self, batches: tuple[Batch, ...], weight: float) -> torch.Tensor:
        """The update itself: gradients of the weighted loss, one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(*batches, weight=weight)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def epoch(self):
        return pyro.validation_enabled(False)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def set_hyperparameters(self, lr, weight_decay, options=None):
        set_hyperparameters(self.optimizer, lr=lr, weight_decay=weight_decay, **(options or {}))

    def optimizer_state(self):
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state):
        self.optimizer.load_state_dict(state)


def _signature(batch: Batch) -> tuple:
    """What a captured step is specialised to: shapes, dtypes, which fields a batch carries,
    and N (the plate's N/M scale is a Python number inside the graph)."""
    def of(t):
        return None if t is None else (tuple(t.shape), t.dtype)
    return of(batch.x), of(batch.y), of(batch.index), batch.num_data


class _Captured:
    """One captured step: its input buffers and the replay that returns its loss."""

    def __init__(self, batches: tuple[Batch, ...]):
        def static(t):
            return None if t is None else t.clone()
        self.batches = tuple(Batch(static(b.x), static(b.y), static(b.index), b.num_data)
                             for b in batches)
        self.replay = None

    def load(self, batches: tuple[Batch, ...]) -> None:
        for ours, theirs in zip(self.batches, batches, strict=True):
            for a, b in ((ours.x, theirs.x), (ours.y, theirs.y), (ours.index, theirs.index)):
                if a is not None:
                    a.copy_(b, non_blocking=True)


@ENGINES.register("graphed")
class GraphedEngine(FastEngine):
    """:class:`FastEngine`'s step replayed from CUDA graphs (``torch.cuda.CUDAGraph``).

    A step is specialised to its key: the batches' :func:`_signature`, the batch weight, the
    KL weight, and the optimizer's hyperparameters (Python numbers that a graph bakes in). The
    first step of a key runs eagerly; the second runs eagerly on a side stream (the warm-up
    that CUDA graph capture needs) and is then captured; every later one copies its batches
    into the graph's buffers and replays it. Random draws inside the graph advance with every
    replay (PyTorch's graph-safe Philox state), so each replay draws fresh noise. Adam is
    built with ``capturable=True`` (its step counter lives on the device). Graphs of a key that
    can no longer occur (another learning rate or KL weight) are dropped; at most
    :attr:`max_graphs` are kept. Sharded (data-parallel) steps run eagerly."""

    name = "graphed"
    reads = frozenset({"fast"})
    optimizer_options = {"capturable": True}
    max_graphs = 4

    def __init__(self, model, objective, optimizer, lr, weight_decay=0.0, ctx=SINGLE,
                 options=None):
        if optimizer != "adam":
            raise ConfigError(f"train.engine=graphed needs optim.name=adam (capturable); "
                              f"{optimizer} trains with train.engine=fast")
        if ctx.active:
            raise ConfigError("train.engine=graphed trains in one process; data-parallel "
                              "training uses train.engine=fast")
        super().__init__(model, objective, optimizer, lr, weight_decay, ctx, options)
        self._check_device(next(model.parameters()).device)
        self._graphs: dict[tuple, _Captured] = {}
        self._seen: set[tuple] = set()
        self._pool = None
        self.captures = 0  # how many graphs were captured (for tests and benchmarks)
        self.replays = 0
        self.eager_only = False

    @staticmethod
    def _check_device(device: torch.device) -> None:
        if device.type != "cuda":
            raise ConfigError("train.engine=graphed needs a CUDA device (--device cuda); on "
                              "this device use train.engine=fast")

    def _key(self, batches, weight) -> tuple:
        handler = self.objective.kl_weight
        hyper = tuple((g["lr"], g["weight_decay"], g.get("eps"), g.get("betas"))
                      for g in self.optimizer.param_groups)
        return (tuple(_signature(b) for b in batches), weight,
                None if handler is None else handler.weight, hyper)

    def step(self, *batches: Batch, weight: float = 1.0) -> torch.Tensor:
        if self.eager_only:
            return super().step(*batches, weight=weight)
        key = self._key(batches, weight)
        captured = self._graphs.get(key)
        if captured is not None:
            captured.load(batches)
            self.replays += 1
            return captured.replay().clone()
        if key not in self._seen:  # first of its key: eager
            self._forget(key)
            self._seen.add(key)
            return super().step(*batches, weight=weight)
        return self._warm_up_and_capture(key, batches, weight)

    def _forget(self, key: tuple) -> None:
        """Drop graphs and keys of other hyperparameters (they cannot come back unchanged
        often enough to pay for their memory), and the oldest beyond :attr:`max_graphs`."""
        stale = [k for k in self._graphs if k[1:] != key[1:]]
        for k in stale:
            del self._graphs[k]
        self._seen = {k for k in self._seen if k[1:] == key[1:]}
        while len(self._graphs) >= self.max_graphs:
            del self._graphs[next(iter(self._graphs))]

    def _warm_up_and_capture(self, key, batches, weight) -> torch.Tensor:
        captured = _Captured(batches)
        loss = self._warm_up(lambda: FastEngine.step(self, *batches, weight=weight))
        try:
            captured.replay = self._capture(lambda: self._update(captured.batches, weight))
        except Exception as error:  # noqa: BLE001 - any capture failure: train eagerly instead
            self.eager_only = True
            self.optimizer.zero_grad(set_to_none=True)
            warnings.warn(f"train.engine=graphed: this objective cannot be captured in a CUDA "
                          f"graph ({type(error).__name__}: {str(error).splitlines()[0]}); "
                          f"training on with eager steps (train.engine=fast)", stacklevel=2)
            return loss
        self._graphs[key] = captured
        self.captures += 1
        return loss

    def _warm_up(self, step):
        """One real step on a side stream (lazy CUDA state is created outside the capture)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            loss = step()
        torch.cuda.current_stream().wait_stream(stream)
        return loss

    def _capture(self, step):
        """Capture ``step`` (it does not run) and return its replay, which runs it and returns
        the loss tensor the capture allocated."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # gradients come from the graph's pool
        with torch.cuda.graph(graph, pool=self._pool):
            loss = step()

        def replay() -> torch.Tensor:
            graph.replay()
            return loss
        return replay

    def load_optimizer_state(self, state):
        super().load_optimizer_state(state)
        self._graphs.clear()
        self._seen.clear()


@ENGINES.register("svi")
class SVIEngine(Engine):
    """:class:`pyro.infer.SVI` with a :class:`~pyro.optim.PyroOptim`, as Pyro's tutorials train.

    The model's networks are registered with ``pyro.module`` on every call (Pyro's classic
    pattern), so SVI's parameter capture finds exactly ``model.parameters()``; the first step
    checks that it did.
    """

    name = "svi"
    prefix = "aevb"

    def __init__(self, model, objective, optimizer, lr, weight_decay=0.0, ctx=SINGLE,
                 options=None):
        super().__init__(model, objective, optimizer, lr, weight_decay, ctx, options)
        if ctx.active:
            raise ConfigError("train.engine=svi trains in one process; data-parallel training "
                              "(torchrun) uses train.engine=fast")
        if objective.critic is not None:
            raise ConfigError(f"train.engine=svi steps the model's parameters only, and "
                              f"elbo={objective.name} trains a critic beside them; use "
                              f"train.engine=fast")
        pyro.clear_param_store()  # pyro.module would otherwise reuse another run's tensors
        args = {"lr": lr, "weight_decay": weight_decay} | (options or {})
        self.optim = pyro.optim.PyroOptim(OPTIMIZERS.get(optimizer), args)

        def registered(fn):
            def call(*args, **kwargs):
                pyro.module(self.prefix, model)
                return fn(*args, **kwargs)
            return call

        self.svi = SVI(registered(objective.wrap_model(model.model)),
                       registered(objective.wrap_guide(model.guide)),
                       self.optim, loss=objective.elbo)
        self._checked = False

    def step(self, *batches: Batch, weight: float = 1.0) -> torch.Tensor:
        if len(batches) != 1 or weight != 1.0:
            raise NotImplementedError("train.engine=svi takes one batch per step")
        apply_share()
        loss = self.svi.step(batches[0])
        if not self._checked:
            self._check_capture()
        return torch.tensor(loss)

    def _check_capture(self) -> None:
        trained = {id(p) for p in self.optim.optim_objs}
        missing = [n for n, p in self.model.named_parameters() if id(p) not in trained]
        if missing:
            raise ConfigError(f"train.engine=svi: SVI did not train {', '.join(missing[:5])}; "
                              "their gradients never reached Pyro's parameter store. Use "
                              "train.engine=fast")
        self._checked = True

    def optimizer_state(self):
        return self.optim.get_state()

    def load_optimizer_state(self, state):
        self.optim.set_state(state)


def build_engine(name: str, model: LatentVariableModel, objective: Objective, optimizer: str,
                 lr: float, weight_decay: float = 0.0, ctx: DistContext = SINGLE,
                 options: dict | None = None) -> Engine:
    """The engine registered as ``name`` (``fast`` or ``svi``), data-parallel over the ranks of
    ``ctx`` where it has more than one; ``options`` are the torch optimizer's further settings
    (``eps``, ``betas``: :meth:`aevb.config.OptimConfig.options`; unset: torch's defaults)."""
    return ENGINES.get(name)(model, objective, optimizer, lr, weight_decay, ctx, options)
