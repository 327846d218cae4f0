"""``aevb experiment semisupervised``: every (method, N_labels, seed) run, resumable, then a table.

A results folder holds ``experiment.json`` (the settings), one folder per run under ``runs/``
(metrics, a checkpoint each epoch, ``result.json`` when finished, M2's ``analogies.png``), M1
models under ``m1/`` shared by a seed's runs on M1's codes (``m1m2``, ``m1baseline``), and
``results.md`` (with each method's paired difference to the baseline), ``results.csv`` and
``accuracy.png``. Restarted with the same arguments, the runner skips finished runs and
resumes the unfinished one from its last epoch; restarted with more seeds, label counts,
methods or epochs, it adds what is missing and keeps what is done. Model selection: each run
reports the test accuracy at the epoch with the best validation accuracy.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from aevb.config import DataConfig
from aevb.data import load_data
from aevb.inference.cpu import prepare as prepare_device
from aevb.inference.errors import ConfigError, RunDirError
from aevb.inference.objectives import build_objective
from aevb.inference.semisupervised import (
    M2_ELBOS,
    METHODS,
    Method,
    SemiData,
    Settings,
    accuracy,
    accuracy_of,
    confusion,
    label_split,
    m1_features,
    subset,
)
from aevb.inference.training import resolve_device, train_epoch
from aevb.inference.training.checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from aevb.inference.training.engines import build_engine
from aevb.inference.training.metrics import MetricsLog
from aevb.models.vae import VAE
from aevb.pictures import accuracy_vs_labels, save_grid
from aevb.sweeps import table
from aevb.sweeps.engine import execute
from aevb.sweeps.executors import Executor, Local, worker_device
from aevb.uses.conditional import analogies, label_classes

#: M1 of Kingma et al. (2014), section 4.1: a 50-dimensional z1 and MLPs of two hidden layers
#: of 600 softplus units.
M1_ARCHITECTURE = {"z_dim": 50, "hidden_sizes": (600, 600), "activation": "softplus"}

# the settings that choose which runs there are, not how a run trains: a results folder may be
# restarted with more (or fewer) of them, e.g. --seeds 5 after --seeds 3 adds seeds 3 and 4
# (--epochs may grow too: see Experiment.claim_folder)
GRID = ("labels", "seeds", "methods")
# settings that say where the data is, where the runs execute and what they report, not what
# they compute
NEUTRAL = ("data_dir", "device", "diagnostics_every")

# settings added since a results folder may have been written, with the value that reproduces
# what its runs did (a missing key never takes a newer default that did not run)
BEFORE_ADDED = {"z_kl_start": 1.0, "z_kl_epochs": 0.0, "classify_from": "binarized",
                "elbo": "elbo", "y_balance": 0.0}

# What q(y|x) classifies under dynamic binarization (with static or no binarization the
# validation and test splits are classified as they are, whichever is chosen):
CLASSIFY_FROM = {
    # the validation and test images' grey levels, the pixel probabilities every binarization
    # draws from (Kingma et al.'s code and Pyro's ss_vae_M2 classify grey levels); M1+M2's
    # codes are of grey-level images too
    "grayscale": "grey-level",
    # one binarization of each, drawn once from a fixed seed (the splits the log-likelihood
    # evaluation reads); M1+M2's training codes are of images binarized once
    "binarized": "once-binarized",
}


@dataclass
class ExperimentConfig:
    """The settings of a semi-supervised experiment (stored as ``experiment.json``)."""

    dataset: str = "fashion-mnist"
    labels: list[int] = field(default_factory=lambda: [100, 600, 1000, 3000])
    seeds: int = 3
    epochs: int = 10
    methods: list[str] = field(default_factory=lambda: ["m2", "m1m2", "baseline"])
    batch_size: int = 128
    lr: float = 1e-3
    alpha: float = 0.1
    labelled_weight: str = "paper"
    labelled_batches: str = "every-step"
    m1_epochs: int | None = None  # default: epochs
    z_kl_start: float = 1.0  # M2's z-KL weight at the start, annealed to 1 (see inference.M2)
    z_kl_epochs: float = 0.0
    weight_prior: float = 0.0  # λ of an N(0, I/λ) prior on every parameter (inference.weight_decay)
    init_sd: float | None = None  # parameters drawn from N(0, init_sd²) (None: torch's init)
    elbo: str = "elbo"  # M2's estimator (inference.semisupervised.M2_ELBOS)
    y_balance: float = 0.0  # M2's class-balance weight (inference.semisupervised.Settings)
    binarization: str = "dynamic"
    # see CLASSIFY_FROM; None: "grayscale" in a new results folder, the folder's own in an
    # existing one (so that a folder's command resumes it unchanged)
    classify_from: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    validation_size: int = 10000
    # every how many epochs a method's diagnostics (M2's generative classifier on the
    # validation set) are measured, and always at the last; they draw from a forked random
    # state, so the training is the same whichever is chosen
    diagnostics_every: int = 1
    data_dir: str | None = None
    device: str = "auto"

    def check(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"--methods: unknown method {m!r}; valid methods: "
                                  f"{', '.join(METHODS.names())}")
        for key in ("seeds", "epochs", "batch_size", "diagnostics_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1")
        if not self.labels:
            raise ConfigError("--labels: give at least one label count, e.g. 100,1000")
        if self.weight_prior < 0:
            raise ConfigError(f"--weight-prior {self.weight_prior}: give λ >= 0 (0: no prior)")
        if self.y_balance < 0:
            raise ConfigError(f"--y-balance {self.y_balance}: give a weight >= 0 (0: none)")
        if self.init_sd is not None and self.init_sd <= 0:
            raise ConfigError(f"--init-sd {self.init_sd}: give a standard deviation > 0")
        if self.elbo not in M2_ELBOS:
            raise ConfigError(f"--elbo {self.elbo!r}: choose one of {', '.join(M2_ELBOS)}")
        if self.classify_from is not None and self.classify_from not in CLASSIFY_FROM:
            raise ConfigError(f"--classify-from {self.classify_from!r}: choose one of "
                              f"{', '.join(CLASSIFY_FROM)}")

    @property
    def grey_levels(self) -> bool:
        """Whether q(y|x) classifies grey levels that training sees only binarized."""
        return self.binarization == "dynamic" and self.resolved_classify_from == "grayscale"

    @property
    def resolved_classify_from(self) -> str:
        """``classify_from``, resolved (:data:`CLASSIFY_FROM`)."""
        return self.classify_from or "grayscale"

    @property
    def classified_words(self) -> str:
        """How the results table names the images q(y|x) classifies ("" or "grey-level ")."""
        words = CLASSIFY_FROM[self.resolved_classify_from]
        return f"{words} " if self.binarization == "dynamic" else ""

    def runs(self) -> list[tuple[str, int, int]]:
        return [(m, n, s) for n in self.labels for m in self.methods for s in range(self.seeds)]


def summarize(results: list[dict], reference: str = "baseline") -> list[dict]:
    """Mean accuracy and its 95% interval (Student's t over seeds) per (method, N_labels).

    Each run's seed fixes its labelled subset, so a method and ``reference`` run with the same
    (N_labels, seed) saw the same labels. For every other method the row also carries the
    *paired* difference (method - reference, over the seeds both have) with its 95% interval,
    ``paired_diff`` and ``paired_ci95`` (nan where no seed is shared): the subset-to-subset
    spread that both methods share cancels there, which the two unpaired intervals keep."""
    rows = []
    points = [({"method": r["method"], "labels": r["labels"], "seed": r.get("seed", i)},
               r["test_accuracy"]) for i, r in enumerate(results)]
    for r in table.summarize(points, ["labels", "method"], "seed", {"method": reference}):
        row = {"method": r["method"], "labels": r["labels"], "seeds": r["seeds"],
               "accuracy": r["mean"], "ci95": r["ci95"], "error": 1 - r["mean"],
               "paired_diff": r["paired_diff"], "paired_ci95": r["paired_ci95"],
               "paired_seeds": r["paired_seeds"]}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["labels"], r["method"]))


def best_within(rows: list[dict], epochs: int, state: dict | None = None) -> dict | None:
    """The runner's model selection at a budget of ``epochs``: of a run's metric rows up to that
    epoch, the first with the highest validation accuracy, with the test accuracy its row
    records. A row written before the runner recorded it takes it from ``state`` (a
    checkpoint's ``extra``) where that names the same best epoch; otherwise it is None. None
    where the run has no row that early."""
    rows = [r for r in rows if r["epoch"] <= epochs]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["valid_accuracy"])  # the first of equals, as the runner
    test = best.get("test_accuracy")
    if test is None and state is not None and state.get("best_epoch") == best["epoch"]:
        test = state["test_at_best"]
    return {"epoch": best["epoch"], "valid_accuracy": best["valid_accuracy"],
            "test_accuracy": test}


def _pct(value: float, signed: bool = False) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:{'+' if signed else ''}.2f}"


def write_table(rows: list[dict], out: Path, description: str) -> None:
    """``results.md`` and ``results.csv`` of the summarized rows, under ``description``."""
    table.write_csv(out / "results.csv", rows)
    lines = [description, "", "| method | labels | seeds | test accuracy (mean ± 95% CI) | error "
             "| minus baseline, paired over seeds (± 95% CI) |", "|---|---|---|---|---|---|"]
    for r in rows:
        paired = ("" if not r["paired_seeds"] else
                  f"{_pct(r['paired_diff'], signed=True)} ± {_pct(r['paired_ci95'])} points "
                  f"({r['paired_seeds']} seeds)")
        lines.append(f"| {r['method']} | {r['labels']} | {r['seeds']} | "
                     f"{_pct(r['accuracy'])}% ± {_pct(r['ci95'])} | {_pct(r['error'])}% | {paired} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")


# how the table's description names each --binarization
BINARIZATION_WORDS = {"dynamic": "dynamic binarization", "static": "static binarization",
                      "none": "grayscale (no binarization)"}


class Experiment:
    """A semi-supervised experiment in its results folder: the data, M1 models, every (method, N_labels, seed)
    run, the table and the plot."""
    def __init__(self, cfg: ExperimentConfig, out: Path, progress: bool = True):
        cfg.check()
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device = resolve_device(cfg.device)
        self._data = None
        self._grey = None

    # -- the folder -------------------------------------------------------------------------------
    @staticmethod
    def saved_settings(out: Path) -> dict:
        """The settings in ``out/experiment.json``; settings added since the folder was written
        take the values its runs ran with (:data:`BEFORE_ADDED`), or their defaults."""
        saved = json.loads((Path(out) / "experiment.json").read_text())
        return asdict(ExperimentConfig()) | BEFORE_ADDED | saved

    @classmethod
    def from_folder(cls, out: Path, data_dir: str | None = None, **changes) -> Experiment:
        """The experiment of a results folder, to read its runs back (:meth:`trained`):
        ``data_dir`` is where its dataset is on this machine (default: the folder's own);
        ``changes`` override other settings, e.g. ``classify_from``."""
        settings = cls.saved_settings(out) | changes
        if data_dir is not None:
            settings["data_dir"] = data_dir
        return cls(ExperimentConfig(**settings), out, progress=False)

    def claim_folder(self) -> None:
        settings = self.out / "experiment.json"
        if settings.is_file():
            saved = self.saved_settings(self.out)
            # M1's epochs are those its models were trained with, unless given
            saved["m1_epochs"] = saved["m1_epochs"] or saved["epochs"]
            if self.cfg.m1_epochs is None:
                self.cfg.m1_epochs = saved["m1_epochs"]
            if self.cfg.classify_from is None:
                self.cfg.classify_from = saved["classify_from"]
            # more epochs: each run goes on from its last checkpoint, as an interrupted run
            # resumes (Adam's step size is constant: no run depends on the epochs ahead of it)
            if self.cfg.epochs > saved["epochs"]:
                saved["epochs"] = self.cfg.epochs
            mine = asdict(self.cfg)
            diff = sorted(k for k in mine if k not in GRID + NEUTRAL and saved.get(k) != mine[k])
            if diff:
                raise RunDirError(f"{self.out} holds an experiment with other settings "
                                  f"({', '.join(diff)} differ); restart it with the same arguments "
                                  f"or choose another --out")
            self.check_runs_can_go_on()
        self.cfg.classify_from = self.cfg.resolved_classify_from
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(settings, json.dumps(asdict(self.cfg), indent=2) + "\n")

    def check_runs_can_go_on(self) -> None:
        """A finished run given more epochs goes on from its checkpoint; where that checkpoint
        is gone (a fresh clone does not hold them), it would start again from epoch 0 and
        overwrite its record, so it is an error, said before anything is written."""
        for method_name, labels, seed in self.cfg.runs():
            run_dir = self.run_dir(method_name, labels, seed)
            result_path = run_dir / "result.json"
            if not result_path.is_file() or list_checkpoints(run_dir):
                continue
            done = json.loads(result_path.read_text())["epochs"]
            if done < self.cfg.epochs:
                raise RunDirError(f"{run_dir} finished at {done} epochs and holds no checkpoint "
                                  f"to go on from to {self.cfg.epochs}; give --epochs {done} to "
                                  f"read it back, or another --out to train anew")

    def data(self):
        if self._data is None:
            c = self.cfg
            dcfg = DataConfig(name=c.dataset, data_dir=c.data_dir, binarization=c.binarization,
                              validation_size=c.validation_size, train_size=c.train_size,
                              test_size=c.test_size)
            self._data = load_data(dcfg, self.device)
        return self._data

    def classified(self):
        """The validation and test splits q(y|x) is scored on (:data:`CLASSIFY_FROM`)."""
        bundle = self.data()
        if not self.cfg.grey_levels:
            return bundle.valid, bundle.test
        if self._grey is None:
            c = self.cfg
            grey = load_data(DataConfig(name=c.dataset, data_dir=c.data_dir, binarization="none",
                                        validation_size=c.validation_size,
                                        train_size=c.train_size, test_size=c.test_size),
                             self.device)
            self._grey = grey.valid, grey.test
        return self._grey

    def semi_data(self, labels: int, seed: int) -> SemiData:
        bundle = self.data()
        split = label_split(bundle.train.y, labels, seed)
        valid, test = self.classified()
        return SemiData(subset(bundle.train, split.labelled), subset(bundle.train, split.unlabelled),
                        valid, test, valid_observed=bundle.valid)

    # -- M1 (shared by a seed's runs on M1's codes) ----------------------------------------------
    def m1(self, seed: int) -> VAE:
        path = self.out / "m1" / f"seed-{seed}.pt"
        bundle = self.data()
        torch.manual_seed(1000 + seed)  # before the VAE's initialisation: M1 depends on the seed only
        model = VAE(tuple(bundle.train.x.shape[1:]), **M1_ARCHITECTURE).to(self.device)
        if path.is_file():
            try:
                model.load_state_dict(torch.load(path, map_location=self.device,
                                                 weights_only=True))
            except RuntimeError as e:
                raise RunDirError(f"{path} holds an M1 of another architecture than today's "
                                  f"{M1_ARCHITECTURE}; move {path.parent} aside to train M1 "
                                  "again") from e
            return model
        prepare_device(self.device)
        engine = build_engine("fast", model, build_objective("elbo"), "adam", self.cfg.lr)
        for epoch in range(self.cfg.m1_epochs or self.cfg.epochs):
            train_epoch(model, engine, bundle.train, self.cfg.batch_size,
                        self.progress, desc=f"M1 seed {seed} epoch {epoch + 1}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, lambda f: torch.save(model.state_dict(), f))
        return model

    # -- one run ---------------------------------------------------------------------------------
    def method(self, method_name: str, labels: int, seed: int) -> Method:
        """The untrained method of the run (``method_name``, ``labels``, ``seed``) on its data
        (M1's codes for methods on M1's features), its initialization drawn from ``seed``."""
        data = self.semi_data(labels, seed)
        if METHODS.get(method_name).on_m1_features:
            data = m1_features(self.m1(seed), data, seed, binarize=not self.cfg.grey_levels)
        torch.manual_seed(seed)
        settings = Settings(self.cfg.batch_size, self.cfg.lr, self.cfg.alpha,
                            self.cfg.labelled_weight, self.cfg.labelled_batches,
                            self.cfg.z_kl_start, self.cfg.z_kl_epochs, self.cfg.weight_prior,
                            self.cfg.init_sd, self.cfg.elbo, self.cfg.y_balance)
        return METHODS.get(method_name)(data, settings)

    def run_dir(self, method_name: str, labels: int, seed: int) -> Path:
        return self.out / "runs" / f"{method_name}-n{labels}-seed{seed}"

    def trained(self, method_name: str, labels: int, seed: int) -> tuple[Method, int]:
        """The run's method as its newest checkpoint left it (only the newest is kept, so this
        is its last trained epoch, not necessarily its best), and that epoch."""
        method = self.method(method_name, labels, seed)
        payload = load_checkpoint(latest_checkpoint(self.run_dir(method_name, labels, seed)),
                                  map_location=self.device)
        return method, restore(payload, method.module, method.optimizer)

    def run(self, method_name: str, labels: int, seed: int) -> dict:
        run_dir = self.run_dir(method_name, labels, seed)
        result_path = run_dir / "result.json"
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if result["epochs"] >= self.cfg.epochs:
                return result  # finished; a run with fewer epochs goes on from its checkpoint
        prepare_device(self.device)
        method = self.method(method_name, labels, seed)
        data = method.data
        state = {"best_valid": -1.0, "best_epoch": 0, "test_at_best": 0.0, "seconds": 0.0}
        start = 0
        if list_checkpoints(run_dir):
            payload = load_checkpoint(latest_checkpoint(run_dir), map_location=self.device)
            start = restore(payload, method.module, method.optimizer)
            state = payload["extra"]
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLog(run_dir, tensorboard=False)
        metrics.truncate(start)
        info = {"method": method_name, "labels": labels, "seed": seed}
        for epoch in range(start + 1, self.cfg.epochs + 1):
            t0 = time.perf_counter()
            row = {"epoch": epoch} | method.train_epoch(epoch)
            row["seconds"] = time.perf_counter() - t0
            state["seconds"] += row["seconds"]
            row["valid_accuracy"] = accuracy(method.classify, data.valid)
            if epoch % self.cfg.diagnostics_every == 0 or epoch == self.cfg.epochs:
                with torch.random.fork_rng():  # training's random stream never sees them
                    row |= method.diagnostics()
            if row["valid_accuracy"] > state["best_valid"]:
                counts = confusion(method.classify, data.test)
                state |= {"best_valid": row["valid_accuracy"], "best_epoch": epoch,
                          "test_at_best": accuracy_of(counts),
                          "test_confusion_at_best": counts.tolist()}
                # the row of each new best holds its test accuracy: the selection at any
                # shorter budget can be read back (:func:`best_within`)
                row["test_accuracy"] = state["test_at_best"]
            metrics.append(row)
            save_checkpoint(run_dir, epoch, method.module, method.optimizer, info, keep=1,
                            extra=state)
        result = info | {
            "test_accuracy": state["test_at_best"], "valid_accuracy": state["best_valid"],
            "best_epoch": state["best_epoch"], "final_test_accuracy": accuracy(method.classify,
                                                                               data.test),
            # rows: true class, columns: argmax q(y|x), at the best validation epoch; absent
            # for runs whose best epoch came before the runner recorded it
            "test_confusion": state.get("test_confusion_at_best"),
            "epochs": self.cfg.epochs, "seconds_training": state["seconds"],
            "num_labelled": len(data.labelled), "num_unlabelled": len(data.unlabelled),
        }
        if getattr(method, "draws_images", False):
            save_grid(analogies(method.module, data.test.x[:10]), run_dir / "analogies.png",
                      nrow=label_classes(method.module) + 1)
        atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
        return result

    def run_all(self, executor: Executor | None = None) -> list[dict]:
        """Every run (finished ones are read back), then the table and the plot; the runs go
        to ``executor`` (default: one after another here; see :mod:`aevb.sweeps.executors`),
        and the table is the same whichever runs them. The M1 models that M1+M2 runs share
        are trained first, one seed per task, so that no two workers train the same one."""
        executor = executor or Local()
        self.data()  # the data is there (or its error is said) before the folder is written
        self.claim_folder()
        runs = self.cfg.runs()
        settings = asdict(self.cfg)
        m1_seeds = sorted({seed for method, _, seed in runs
                           if METHODS.get(method).on_m1_features})
        execute([M1Task(f"m1-seed{s}", str(self.out), settings, s) for s in m1_seeds], executor,
                progress=False)
        tasks = [RunTask(f"{m}-n{n}-seed{s}", str(self.out), settings, m, n, s)
                 for m, n, s in runs]
        return self.write_summary(execute(tasks, executor, self.progress))

    def write_summary(self, results: list[dict]) -> list[dict]:
        rows = summarize(results)
        bundle = self.data()
        d = bundle.description
        description = (f"{self.cfg.dataset}: {d['num_train']} training images (labelled subset + "
                       f"the rest unlabelled), {d['num_valid']} validation, {d['num_test']} test; "
                       f"{BINARIZATION_WORDS.get(self.cfg.binarization, self.cfg.binarization)}; "
                       f"{self.cfg.epochs} epochs; test accuracy of argmax q(y|x) on "
                       f"{self.cfg.classified_words}test images at the best validation epoch; "
                       f"{self.cfg.seeds} seeds"
                       + ("; M2's KL(q(z|x,y) || p(z)) in closed form"
                          if self.cfg.elbo == "meanfield" else "")
                       + ("; SUBSET of the data" if d["subset"] else ""))
        write_table(rows, self.out, description)
        accuracy_vs_labels(rows, self.out / "accuracy.png")
        return rows


# -- the grid's tasks (picklable: they run in worker processes and Ray tasks too) ------------
_EXPERIMENTS: dict[tuple[str, str], Experiment] = {}


def _experiment(out: str, settings: dict) -> Experiment:
    """This process's :class:`Experiment` of ``settings`` in ``out`` (its data loaded once)."""
    key = (out, json.dumps(settings, sort_keys=True))
    if key not in _EXPERIMENTS:
        config = ExperimentConfig(**settings)
        config.device = worker_device(config.device)
        _EXPERIMENTS[key] = Experiment(config, Path(out), progress=False)
    return _EXPERIMENTS[key]


@dataclass
class M1Task:
    """Train (or read) M1 of one seed."""

    key: str
    out: str
    settings: dict
    seed: int

    def run(self) -> dict:
        _experiment(self.out, self.settings).m1(self.seed)
        return {}


@dataclass
class RunTask:
    """One (method, N_labels, seed) run, resumed from its checkpoint."""

    key: str
    out: str
    settings: dict
    method: str
    labels: int
    seed: int

    def run(self) -> dict:
        return _experiment(self.out, self.settings).run(self.method, self.labels, self.seed)
