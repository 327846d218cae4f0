"""Kingma & Welling (2014), Figure 2 on MNIST: the variational lower bound on the training and
test data against the number of training samples evaluated, AEVB against wake-sleep, for
N_z ∈ {3, 5, 10, 20, 200}.

Their setting (section 5): an MLP encoder and decoder with one hidden layer of 500 tanh units,
a Bernoulli decoder, minibatches of M = 100, L = 1, Adagrad with the step size chosen from
{0.01, 0.02, 0.1} "based on performance on the training set in the first few iterations", and
the N(0, I) prior on the parameters. aevb's loss is the N/M-scaled estimate of the whole
dataset's negative ELBO, so ``optim.weight_decay=1`` adds exactly the gradient of that prior's
negative log-density. Data: the 60,000 MNIST training images, binarized once (the paper does not
say how it binarized; a fixed binarization makes the training bound the bound on the data
trained on), and the 10,000 test images. Wake-sleep is aevb's ``elbo=wake-sleep`` (the guide
learns from dreams, the model from samples of the guide; Hinton et al. 1995) with one sample.

Each row first picks its step size: ``--select-epochs`` epochs for each candidate, the best
training objective wins (kept in ``selection.json``). Then it trains to ``--samples-evaluated``
training samples, logging the mean ELBO of the first ``--track-size`` training images and of
the whole test set after every epoch (``eval.track``). Every run is an aevb run folder under
``--out``/runs and resumes where it stopped: the same command continues the work.

    python benchmarks/kingma_welling.py --data-dir ../shared/data/mnist
    python benchmarks/kingma_welling.py --z-dims 3,200 --data-dir ...   # two panels
    python benchmarks/kingma_welling.py --table --data-dir ...          # figure + table only
    python benchmarks/kingma_welling.py --workers 2 --data-dir ...      # two rows at a time
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from zoo import run_settings, write_results  # the sibling script's shared settings and files

from aevb.sweeps import TrainTask, metrics_rows

ROOT = Path(__file__).resolve().parents[1]
Z_DIMS = (3, 5, 10, 20, 200)
METHODS = {"aevb": ["elbo=elbo"], "wake-sleep": ["elbo=wake-sleep"]}
STEP_SIZES = (0.01, 0.02, 0.1)


def num_train(args) -> int:
    return args.train_size or 60000


def epochs(args) -> int:
    return math.ceil(args.samples_evaluated / num_train(args))


def overrides_of(args, method: str, z_dim: int, lr: float, n_epochs: int, track: bool
                 ) -> list[str]:
    overrides = [
        "data.name=mnist", "data.binarization=static", "data.validation_size=0",
        "model=vae", "model.hidden_sizes=[500]", "model.activation=tanh", f"model.z_dim={z_dim}",
        "model.likelihood=bernoulli", "num_particles=1", "train.batch_size=100",
        "optim.name=adagrad", f"optim.lr={lr}", "optim.weight_decay=1.0",
        f"train.epochs={n_epochs}", "train.keep_checkpoints=1", *run_settings(args),
        *METHODS[method],
    ]
    if track:
        overrides += ["eval.track=[train,test]", f"eval.track_size={args.track_size}"]
    return overrides


def train_or_resume(label: str, run_dir: Path, overrides: list[str], evaluate: bool) -> None:
    """One run of the figure (aevb's sweep task: trained, or resumed where it stopped)."""
    print(f"[kw] {label}: {run_dir}", flush=True)
    TrainTask(run_dir.name, str(run_dir), None, tuple(overrides), {}, evaluate).run()


def select_step_size(args, method: str, z_dim: int) -> float:
    """The candidate with the best training objective after ``--select-epochs`` epochs."""
    folder = args.out / "runs" / f"{method}-z{z_dim}"
    record = folder / "selection.json"
    if record.is_file():
        return json.loads(record.read_text())["lr"]
    from aevb.inference.errors import DivergenceError

    scores = {}
    for lr in STEP_SIZES:
        run_dir = folder / f"select-lr{lr}"
        try:
            train_or_resume(f"{method} N_z={z_dim} lr={lr} (selection)", run_dir,
                            overrides_of(args, method, z_dim, lr, args.select_epochs, False),
                            evaluate=False)
        except DivergenceError as exc:  # a step size that diverges loses
            print(f"[kw] lr={lr} diverged: {exc}", flush=True)
        done = metrics_rows(run_dir)
        last = done[-1]["train_objective"] if len(done) == args.select_epochs else -math.inf
        scores[lr] = last if math.isfinite(last) else -math.inf
    best = max(scores, key=scores.get)
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"lr": best, "train_objective": scores,
                                  "epochs": args.select_epochs}, indent=2) + "\n")
    return best


def run_dir_of(args, method: str, z_dim: int) -> Path:
    return args.out / "runs" / f"{method}-z{z_dim}" / "main"


def run_row(args, method: str, z_dim: int) -> None:
    lr = select_step_size(args, method, z_dim)
    train_or_resume(f"{method} N_z={z_dim} lr={lr}", run_dir_of(args, method, z_dim),
                    overrides_of(args, method, z_dim, lr, epochs(args), True), evaluate=True)


@dataclass(frozen=True)
class RowTask:
    """One line of a panel (method, N_z) as a sweep task: its step size chosen, then trained
    or resumed, in whichever process the executor gives it."""

    args: argparse.Namespace
    method: str
    z_dim: int

    @property
    def key(self) -> str:
        return f"{self.method}-z{self.z_dim}"

    def run(self) -> dict:
        run_row(self.args, self.method, self.z_dim)
        return {"key": self.key}


def results(args) -> list[dict]:
    out = []
    for z_dim in args.z_dims:
        for method in METHODS:
            run_dir = run_dir_of(args, method, z_dim)
            rows = metrics_rows(run_dir)
            selection = run_dir.parent / "selection.json"
            lr = json.loads(selection.read_text())["lr"] if selection.is_file() else None
            entry = {"z_dim": z_dim, "method": method, "lr": lr, "epochs": len(rows),
                     "budget": epochs(args), "rows": rows}
            if rows:
                entry |= {"samples": len(rows) * num_train(args),
                          "train_elbo": rows[-1]["train_elbo"], "test_elbo": rows[-1]["test_elbo"],
                          "hours": sum(r["seconds"] for r in rows) / 3600}
            out.append(entry)
    return out


def write_figure(found: list[dict], args) -> Path:
    from aevb.pictures import plt

    fig, axes = plt.subplots(1, len(args.z_dims), figsize=(3.2 * len(args.z_dims), 3.2),
                             squeeze=False)
    colours = {"aevb": "tab:blue", "wake-sleep": "tab:red"}
    for ax, z_dim in zip(axes[0], args.z_dims, strict=True):
        for entry in (e for e in found if e["z_dim"] == z_dim and e["rows"]):
            x = [r["epoch"] * num_train(args) for r in entry["rows"]]
            c = colours[entry["method"]]
            ax.plot(x, [r["train_elbo"] for r in entry["rows"]], "--", color=c,
                    label=f"{entry['method']} train")
            ax.plot(x, [r["test_elbo"] for r in entry["rows"]], "-", color=c,
                    label=f"{entry['method']} test")
        ax.set_xscale("log")
        ax.set_title(f"MNIST, $N_z$ = {z_dim}")
        ax.set_xlabel("training samples evaluated")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("lower bound (nats per image)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = args.out / "figure2.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_table(found: list[dict], args) -> str:
    fields = ["z_dim", "method", "lr", "epochs", "budget", "samples", "train_elbo", "test_elbo",
              "hours"]
    subset = " (SUBSET: smoke settings)" if args.train_size or args.test_size else ""
    lines = [f"MNIST{subset}, {num_train(args)} training images binarized once, "
             f"{args.test_size or 10000} test images; 784-500-N_z tanh MLPs, Bernoulli decoder, "
             f"M = 100, L = 1, Adagrad (step size chosen from {', '.join(map(str, STEP_SIZES))} "
             f"after {args.select_epochs} epoch(s)), N(0, I) weight prior; budget "
             f"{epochs(args)} epochs = {epochs(args) * num_train(args):.3g} training samples; "
             f"training bound on the first {args.track_size} training images; seed 0.", "",
             "| N_z | method | step size | epochs | samples evaluated | train bound | test bound "
             "| hours |", "|---|---|---|---|---|---|---|---|"]
    for e in found:
        if not e["rows"]:
            lines.append(f"| {e['z_dim']} | {e['method']} | {e['lr'] or ''} | 0/{e['budget']} | "
                         f"not started | | | |")
            continue
        lines.append(f"| {e['z_dim']} | {e['method']} | {e['lr']} | {e['epochs']}/{e['budget']} "
                     f"| {e['samples']:.3g} | {e['train_elbo']:.2f} | {e['test_elbo']:.2f} | "
                     f"{e['hours']:.2f} |")
    return write_results(args.out, "figure2", fields, found, lines)


def report(args) -> str:
    found = results(args)
    write_figure(found, args)
    return write_table(found, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--z-dims", default=",".join(map(str, Z_DIMS)),
                        help="comma-separated N_z (default 3,5,10,20,200: the paper's panels)")
    parser.add_argument("--samples-evaluated", type=float, default=1e7,
                        help="training samples each run evaluates (1e7: 167 epochs)")
    parser.add_argument("--select-epochs", type=int, default=1,
                        help="epochs of each step-size candidate")
    parser.add_argument("--track-size", type=int, default=10000,
                        help="training images the training bound is computed on")
    parser.add_argument("--samples", type=int, default=100,
                        help="k of the final IS log-likelihood of each run")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "kingma_welling")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--train-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--test-size", type=int, default=None, help="smoke tests only")
    parser.add_argument("--table", action="store_true", help="only write the figure and table")
    parser.add_argument("--workers", type=int, default=1,
                        help="rows trained at a time, in worker processes sharing the cores")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    try:
        args.z_dims = [int(z) for z in args.z_dims.split(",") if z]
    except ValueError:
        parser.error(f"--z-dims {args.z_dims!r}: give comma-separated integers, e.g. 3,5,10")
    if not args.z_dims or min(args.z_dims) < 1 or args.select_epochs < 1 or \
            args.samples_evaluated < 1 or args.track_size < 1 or args.workers < 1:
        parser.error("--z-dims, --select-epochs, --samples-evaluated, --track-size and --workers "
                     "must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        from aevb.sweeps import Local, Processes, execute

        tasks = [RowTask(args, method, z_dim) for z_dim in args.z_dims for method in METHODS]
        executor = Processes(workers=args.workers) if args.workers > 1 else Local()
        execute(tasks, executor, progress=False,
                on_result=lambda task, result: print(report(args), flush=True))
    print(report(args), end="")


if __name__ == "__main__":
    main()
