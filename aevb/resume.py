"""What a resumed run may change, and the record of what it changed.

``aevb train --resume RUN key=value ...`` (and :func:`aevb.fit` with ``resume=True``) compares
the new configuration with the one the checkpoint saved. Every difference is either

* **applied** everywhere it acts and recorded (printed, appended to ``run.json``'s
  ``resumes`` list, and visible per epoch in the metrics: objective, k, learning rate), or
* **refused** before anything is written, naming the key and the fix: the settings that make
  the run what it is (the model, the data, the seed, the optimizer and the engine whose state
  the checkpoint holds), and changes that cannot mean what they say (fewer epochs than already
  trained; an importance-weighted objective with k = 1, which is the ELBO).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aevb.inference.errors import ConfigError

#: keys (and sections, ending with a dot) a resume cannot change, with the reason
FIXED = {
    "model.": "the checkpoint holds this model's parameters",
    "data.": "the run trained on this data",
    "seed": "the checkpoint holds the random state the seed started",
    "optim.name": "the checkpoint holds this optimizer's state",
    "train.engine": "the checkpoint holds this engine's optimizer state",
    "train.init": "the run's parameters started so, and the checkpoint holds them since",
}
#: data keys that say where the same data is, or what to evaluate on, not which data it is
DATA_LOCATION = ("data.data_dir", "data.download", "data.test_size")
#: optimizer settings that the svi engine's per-parameter optimizers cannot take on resume
OPTIMIZER_SETTINGS = ("optim.lr", "optim.weight_decay", "optim.eps", "optim.beta1")
#: objectives for which k = 1 is the ELBO (or, for rws, a guide update of pure noise)
NEEDS_SEVERAL_SAMPLES = ("iwae", "renyi", "rws")


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config dict as ``{'section.key': value}`` (specs and options kept whole)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "spec" and key != "options":
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass
class ResumePlan:
    """The differences between the saved run and the new configuration."""

    trained: int
    changes: dict[str, tuple] = field(default_factory=dict)

    def describe(self) -> list[str]:
        return [f"{key}: {old!r} -> {new!r}" for key, (old, new) in self.changes.items()]


def _fixed_reason(key: str) -> str | None:
    if key in DATA_LOCATION:
        return None
    for prefix, reason in FIXED.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return reason
    return None


def plan(saved: dict, new: dict, trained: int, engine: str) -> ResumePlan:
    """Check the new configuration ``new`` against ``saved`` (both as :func:`~aevb.config.to_dict`
    gives them) for a run that has trained ``trained`` epochs; raise :class:`ConfigError` for a
    change a resume cannot make."""
    from aevb.config import Config, to_dict

    old, now, default = flatten(saved), flatten(new), flatten(to_dict(Config()))
    # a key the saved config lacks (added by a newer aevb) at its default is no change
    changes = {k: (old.get(k), now.get(k)) for k in sorted(set(old) | set(now))
               if old.get(k) != now.get(k) and k not in ("train.progress",)
               and not (k not in old and now.get(k) == default.get(k))}
    for key, (before, after) in changes.items():
        reason = _fixed_reason(key)
        if reason:
            raise ConfigError(f"--resume cannot change {key} ({before!r} -> {after!r}): {reason}; "
                              f"start a new run (--run-dir) to train with {key}={after!r}")
        if engine == "svi" and key in OPTIMIZER_SETTINGS:
            raise ConfigError(f"--resume cannot change {key} under train.engine=svi (Pyro's "
                              f"optimizers take their settings from the saved state); resume "
                              f"without it, or train a new run with train.engine=fast")
    epochs = now["train.epochs"]
    if epochs < trained:
        raise ConfigError(f"train.epochs={epochs}, but the run has already trained {trained} "
                          f"epochs; give train.epochs > {trained} to train on, or use `aevb "
                          f"evaluate` on the run as it is")
    if ("elbo" in changes or "num_particles" in changes) and now["num_particles"] == 1 \
            and now["elbo"] in NEEDS_SEVERAL_SAMPLES:
        raise ConfigError(f"elbo={now['elbo']} with num_particles=1 is the ELBO (k = 1); give "
                          f"num_particles=K (e.g. num_particles=5) with it")
    return ResumePlan(trained, changes)
