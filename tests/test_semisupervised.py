"""Semi-supervised learning: label splits, batches, M2's objective, the experiment runner."""

import contextlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from aevb.experiments.semisupervised import Experiment, ExperimentConfig, best_within, summarize
from aevb.inference import Split
from aevb.inference.errors import ConfigError, RunDirError
from aevb.inference.objectives import KLSchedule
from aevb.inference.semisupervised import (
    METHODS,
    Method,
    SemiData,
    Settings,
    accuracy,
    confusion,
    label_split,
    m1_features,
    m2_spec,
    paired_batches,
    recycled,
    subset,
)
from aevb.models.base import Batch
from aevb.sweeps.table import t95


def fake_labels(n=1000, classes=10, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_label_splits_are_class_balanced_deterministic_and_disjoint():
    y = fake_labels()
    a, b, c = label_split(y, 100, seed=3), label_split(y, 100, seed=3), label_split(y, 100, seed=4)
    assert torch.equal(a.labelled, b.labelled) and not torch.equal(a.labelled, c.labelled)
    assert torch.bincount(y[a.labelled], minlength=10).tolist() == [10] * 10
    assert len(set(a.labelled.tolist()) & set(a.unlabelled.tolist())) == 0
    assert sorted(a.labelled.tolist() + a.unlabelled.tolist()) == list(range(len(y)))
    with pytest.raises(ConfigError, match="multiple of the 10 classes"):
        label_split(y, 105, seed=0)
    with pytest.raises(ConfigError, match="fewer than the"):
        label_split(y, 5000, seed=0)


def test_each_unlabelled_image_once_per_epoch_with_recycled_labelled_batches():
    x = torch.rand(50, 1, 2, 2)
    unlabelled, labelled = Split(x[:40], torch.zeros(40).long()), Split(x[40:], torch.arange(10))
    seen = []
    for bu, bl in paired_batches(unlabelled, recycled(labelled, 4), batch_size=8):
        assert bu.y is None and bu.num_data == 40
        assert bl.y is not None and bl.num_data == 10 and len(bl) <= 4
        seen += bu.index.tolist()
    assert sorted(seen) == list(range(40))


def test_a_split_with_a_scale_draws_every_batch_from_its_gaussian():
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    split = Split(loc, torch.arange(4), scale=scale)
    draws = torch.stack([next(split.batches(4)).x for _ in range(20000)])
    assert draws.mean(0) == pytest.approx(loc, abs=0.03)
    assert draws.std(0) == pytest.approx(scale, rel=0.03)
    kept = subset(split, torch.tensor([2, 0]))
    assert torch.equal(kept.scale, scale[[2, 0]])
    with pytest.raises(ValueError, match="one scale per value"):
        Split(loc, scale=scale[:2])


def test_m1_codes_train_m2_on_fresh_draws_of_q_z1_and_classify_from_its_mean():
    """Kingma et al. (2014), M1+M2: the training splits carry q(z1|x)'s mean and scale; the
    validation and test splits the mean alone."""
    from aevb.models.vae import VAE

    torch.manual_seed(0)
    m1 = VAE((1, 4, 4), z_dim=3, hidden_sizes=(8,))
    x = torch.rand(30, 1, 4, 4)
    data = SemiData(Split(x[:10], torch.arange(10), dynamic=True),
                    Split(x[10:], torch.zeros(20).long(), dynamic=True),
                    Split(torch.bernoulli(x[:5]), torch.arange(5)),
                    Split(torch.bernoulli(x[5:10]), torch.arange(5)))
    codes = m1_features(m1, data, seed=0)
    for split in (codes.labelled, codes.unlabelled):
        assert split.x.shape[1:] == (3,) and split.scale is not None
        assert (split.scale > 0).all()
    q = m1.posterior(data.valid.x)
    assert torch.allclose(codes.valid.x, q.mean) and codes.valid.scale is None
    assert codes.test.scale is None
    first, second = (next(codes.labelled.batches(10)).x for _ in range(2))
    assert not torch.equal(first, second)  # a fresh z1 each time
    # by default the training images are binarized once before they are encoded; without
    # binarize their grey levels are (as Kingma et al.'s code does)
    assert not torch.allclose(codes.labelled.x, m1.posterior(x[:10]).mean)
    grey = m1_features(m1, data, seed=0, binarize=False)
    assert torch.allclose(grey.labelled.x, m1.posterior(x[:10]).mean)


def test_labelled_batches_once_per_epoch_spread_and_scaled_to_the_same_expected_objective():
    """Pyro's schedule: each labelled image once per epoch; its batches' N/M scale grows by
    steps / labelled steps, and so does the classification term (its aux weight per image is
    unchanged), so an epoch's expected objective equals every-step's."""
    x = torch.rand(60, 1, 28, 28)
    data = SemiData(Split(x[:10], torch.arange(10)), Split(x[10:], torch.zeros(50).long()),
                    Split(x[:5], torch.arange(5)), Split(x[:5], torch.arange(5)))
    every = Settings(alpha=0.1, batch_size=5)
    once = Settings(alpha=0.1, batch_size=5, labelled_batches="once-per-epoch")
    stream = Method(data, once).labelled_stream
    from aevb.inference.semisupervised import labelled_steps

    assert labelled_steps(data, every) is None and labelled_steps(data, once) == 2
    pairs = list(paired_batches(data.unlabelled, stream, 5, labelled_steps(data, once)))
    assert len(pairs) == 10 and [i for i, (_, b) in enumerate(pairs) if b is not None] == [0, 5]
    assert all(b.num_data == 10 * 10 // 2 for _, b in pairs if b is not None)  # N_l * 10 / 2
    aux = {s.labelled_batches: m2_spec("m2", data, s)["sometimes_observed"]["y"]["posterior"]
           ["aux_weight"] for s in (every, once)}
    assert aux["every-step"] == aux["once-per-epoch"]
    with pytest.raises(ConfigError, match="--labelled-batches 'twice'"):
        Method(data, Settings(labelled_batches="twice"))


def test_m2_classification_weight_is_alpha_times_n_per_labelled_mean():
    x = torch.rand(60, 1, 28, 28)
    data = SemiData(Split(x[:10], torch.arange(10)), Split(x[10:], torch.zeros(50).long()),
                    Split(x[:5], torch.arange(5)), Split(x[:5], torch.arange(5)))
    spec = m2_spec("m2", data, Settings(alpha=0.1))
    # alpha * N * mean over labelled = (0.1 * 60 / 10) * sum over labelled
    assert spec["sometimes_observed"]["y"]["posterior"]["aux_weight"] == pytest.approx(0.6)


def test_balanced_labelled_weight_scales_labelled_batches_as_the_unlabelled_set():
    """``labelled_weight=balanced`` counts the labelled set as if replicated to the unlabelled
    set's size (N_l/M -> N_u/M), and the per-image classification weight shrinks by as much, so
    the alpha * N * mean log q(y|x) term of eq. 9 is unchanged."""
    x = torch.rand(60, 1, 28, 28)
    data = SemiData(Split(x[:10], torch.arange(10)), Split(x[10:], torch.zeros(50).long()),
                    Split(x[:5], torch.arange(5)), Split(x[:5], torch.arange(5)))
    paper, balanced = Settings(alpha=0.1), Settings(alpha=0.1, labelled_weight="balanced")
    for settings, num_data in ((paper, 10), (balanced, 50)):
        batch = next(Method(data, settings).labelled_stream)
        aux = m2_spec("m2", data, settings)["sometimes_observed"]["y"]["posterior"]["aux_weight"]
        assert batch.num_data == num_data
        assert aux * num_data == pytest.approx(0.1 * 60)  # alpha * N per labelled mean
    with pytest.raises(ConfigError, match="--labelled-weight 'heavy'"):
        Method(data, Settings(labelled_weight="heavy"))


def test_confusion_counts_true_class_by_predicted_class_across_batches():
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2, 2])
    x = torch.arange(7.0).view(7, 1)  # each image's index: the classifier looks its answer up
    split = Split(x, y)

    def classify(x):
        return torch.nn.functional.one_hot(predicted[x.view(-1).long()], 3).float()

    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert torch.equal(confusion(classify, split, batch_size=3), expected)  # 3 batches summed
    assert accuracy(classify, split, batch_size=2) == 5 / 7


def test_interval_is_the_student_t_interval_over_seeds():
    assert t95(3) == pytest.approx(4.303, abs=1e-3)  # the printed table's value for 2 d.o.f.
    rows = summarize([{"method": "m2", "labels": 100, "test_accuracy": a} for a in (0.5, 0.6, 0.7)])
    assert rows[0]["accuracy"] == pytest.approx(0.6)
    assert rows[0]["ci95"] == pytest.approx(4.303 * 0.1 / 3 ** 0.5, rel=1e-3)


def test_paired_difference_to_the_baseline_over_shared_seeds():
    """M2 - baseline per seed (each seed is one labelled subset), mean and its t interval; the
    baseline row and a method with no shared seed carry none."""
    scipy_stats = pytest.importorskip("scipy.stats")
    base = {0: 0.60, 1: 0.70, 2: 0.65, 3: 0.50}
    m2 = {0: 0.62, 1: 0.73, 2: 0.66}  # seed 3 not run: only seeds 0-2 pair up
    results = ([{"method": "baseline", "labels": 100, "seed": s, "test_accuracy": a}
                for s, a in base.items()] +
               [{"method": "m2", "labels": 100, "seed": s, "test_accuracy": a} for s, a in m2.items()] +
               [{"method": "m2", "labels": 1000, "seed": 0, "test_accuracy": 0.8}])
    rows = {(r["method"], r["labels"]): r for r in summarize(results)}
    diffs = [m2[s] - base[s] for s in m2]
    paired = rows["m2", 100]
    assert paired["paired_seeds"] == 3
    assert paired["paired_diff"] == pytest.approx(sum(diffs) / 3)
    interval = scipy_stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=scipy_stats.sem(diffs))
    assert paired["paired_ci95"] == pytest.approx((interval[1] - interval[0]) / 2, rel=1e-3)
    # the paired interval is far narrower than the unpaired ones: the subsets' spread cancels
    assert paired["paired_ci95"] < paired["ci95"] / 5
    for key in (("baseline", 100), ("m2", 1000)):
        assert rows[key]["paired_seeds"] == 0 and rows[key]["paired_diff"] != rows[key]["paired_diff"]


def test_selection_at_a_shorter_budget_takes_the_first_best_epoch_within_it():
    rows = [{"epoch": 1, "valid_accuracy": 0.5, "test_accuracy": 0.40},
            {"epoch": 2, "valid_accuracy": 0.7, "test_accuracy": 0.60},
            {"epoch": 3, "valid_accuracy": 0.7},  # a tie is no new best: no test recorded
            {"epoch": 4, "valid_accuracy": 0.9}]  # a row from before the runner recorded it
    assert best_within(rows, 1) == {"epoch": 1, "valid_accuracy": 0.5, "test_accuracy": 0.40}
    assert best_within(rows, 3) == {"epoch": 2, "valid_accuracy": 0.7, "test_accuracy": 0.60}
    assert best_within(rows, 4)["test_accuracy"] is None
    state = {"best_epoch": 4, "test_at_best": 0.8}  # the checkpoint's record of that best
    assert best_within(rows, 10, state)["test_accuracy"] == 0.8
    assert best_within(rows, 3, state)["test_accuracy"] == 0.60  # another epoch: not taken
    assert best_within(rows, 0) is None


def tiny(**kw):
    base = dict(labels=[20, 50], seeds=2, epochs=1, train_size=300, test_size=100,
                batch_size=64, device="cpu")
    return ExperimentConfig(**(base | kw))


@pytest.mark.data
def test_tiny_experiment_writes_table_plot_and_resumes(fashion_dir, tmp_path, monkeypatch):
    out = tmp_path / "ss"
    rows = Experiment(tiny(data_dir=str(fashion_dir)), out, progress=False).run_all()
    assert {(r["method"], r["labels"]) for r in rows} == {
        (m, n) for m in ("m2", "m1m2", "baseline") for n in (20, 50)}
    assert all(0 <= r["accuracy"] <= 1 and r["seeds"] == 2 for r in rows)
    for name in ("results.md", "results.csv", "accuracy.png", "experiment.json"):
        assert (out / name).is_file()
    table = (out / "results.md").read_text()
    assert "| m2 | 20 | 2 |" in table and "(2 seeds) |" in table  # M2 paired with the baseline
    assert (out / "runs" / "m2-n20-seed0" / "analogies.png").is_file()

    # restarted with the same arguments: finished runs are skipped
    finished = out / "runs" / "baseline-n50-seed1" / "result.json"
    before = finished.stat().st_mtime_ns
    (out / "runs" / "m2-n50-seed1" / "result.json").unlink()
    calls = []
    original = METHODS.get("m2").train_epoch
    monkeypatch.setattr(METHODS.get("m2"), "train_epoch",
                        lambda self, epoch: calls.append(1) or original(self, epoch))
    Experiment(tiny(data_dir=str(fashion_dir)), out, progress=False).run_all()
    assert finished.stat().st_mtime_ns == before
    assert calls == []  # its checkpoint already held the last epoch: nothing retrained
    assert (out / "runs" / "m2-n50-seed1" / "result.json").is_file()

    with pytest.raises(RunDirError, match="other settings \\(alpha differ\\)"):
        Experiment(tiny(data_dir=str(fashion_dir), alpha=0.3), out, progress=False).run_all()


@pytest.mark.data
def test_diagnostics_every_few_epochs_leave_the_training_as_it_was(fashion_dir, tmp_path):
    """M2's generative classifier draws z; it draws from a forked random state, so measuring
    it every epoch or every second one trains the same model."""
    cfg = dict(data_dir=str(fashion_dir), labels=[20], seeds=1, epochs=3, methods=["m2"])
    rows = {}
    for every in (1, 2):
        out = tmp_path / f"every{every}"
        Experiment(tiny(diagnostics_every=every, **cfg), out, progress=False).run_all()
        rows[every] = [json.loads(line) for line in
                       (out / "runs" / "m2-n20-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows[2] if "valid_generative_accuracy" in r] == [2, 3]  # and the last
    assert all("valid_generative_accuracy" in r for r in rows[1])
    for key in ("train_objective", "valid_accuracy"):
        assert [r[key] for r in rows[1]] == [r[key] for r in rows[2]]
    assert [r["valid_generative_accuracy"] for r in rows[1][1:]] == \
        [r["valid_generative_accuracy"] for r in rows[2][1:]]
    # a folder goes on with another value: it reports, it does not change what is computed
    Experiment(tiny(diagnostics_every=3, **cfg | {"epochs": 4}), tmp_path / "every2",
               progress=False).run_all()
    with pytest.raises(ConfigError, match="--diagnostics-every must be >= 1"):
        tiny(diagnostics_every=0, **cfg).check()


@pytest.mark.data
def test_more_seeds_extend_a_results_folder_without_rerunning_its_runs(fashion_dir, tmp_path):
    out = tmp_path / "ss"
    cfg = dict(data_dir=str(fashion_dir), labels=[20], epochs=1, methods=["baseline"])
    Experiment(tiny(seeds=1, **cfg), out, progress=False).run_all()
    first = out / "runs" / "baseline-n20-seed0" / "result.json"
    before = first.stat().st_mtime_ns
    rows = Experiment(tiny(seeds=2, **cfg), out, progress=False).run_all()
    assert first.stat().st_mtime_ns == before  # seed 0 kept, seed 1 added
    assert (out / "runs" / "baseline-n20-seed1" / "result.json").is_file()
    assert [r["seeds"] for r in rows] == [2]
    assert "| baseline | 20 | 2 |" in (out / "results.md").read_text()
    assert json.loads((out / "experiment.json").read_text())["seeds"] == 2


@pytest.mark.data
def test_more_epochs_continue_finished_runs_from_their_last_checkpoint(fashion_dir, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "ss"
    cfg = dict(data_dir=str(fashion_dir), labels=[20], seeds=1,
               methods=["m1m2", "m1baseline", "baseline"])
    Experiment(tiny(epochs=1, **cfg), out, progress=False).run_all()
    m1 = out / "m1" / "seed-0.pt"
    m1_before = m1.stat().st_mtime_ns
    epochs_trained = []
    for name in ("m1m2", "m1baseline", "baseline"):
        original = METHODS.get(name).train_epoch
        monkeypatch.setattr(METHODS.get(name), "train_epoch",
                            lambda self, epoch, original=original: epochs_trained.append(epoch)
                            or original(self, epoch))
    Experiment(tiny(epochs=3, **cfg), out, progress=False).run_all()
    assert epochs_trained == [2, 3] * 3  # epochs 2 and 3 of each run, epoch 1 not again
    for name in ("m1m2", "m1baseline", "baseline"):
        run = out / "runs" / f"{name}-n20-seed0"
        assert json.loads((run / "result.json").read_text())["epochs"] == 3
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert all(r["seconds"] > 0 for r in rows)
        # the rows alone give back the run's own selection, across the resume
        result = json.loads((run / "result.json").read_text())
        assert best_within(rows, 3) == {"epoch": result["best_epoch"],
                                        "valid_accuracy": result["valid_accuracy"],
                                        "test_accuracy": result["test_accuracy"]}
        counts = torch.tensor(result["test_confusion"])  # kept across the resume too
        assert int(counts.trace()) / int(counts.sum()) == result["test_accuracy"]
    assert m1.stat().st_mtime_ns == m1_before  # M1 keeps the epochs it was trained with
    saved = json.loads((out / "experiment.json").read_text())
    assert saved["epochs"] == 3 and saved["m1_epochs"] == 1
    epochs_trained.clear()
    Experiment(tiny(epochs=3, **cfg), out, progress=False).run_all()  # the same arguments again
    assert epochs_trained == []
    with pytest.raises(RunDirError, match=r"\(epochs differ\)"):  # fewer: the runs are past it
        Experiment(tiny(epochs=2, **cfg), out, progress=False).run_all()


@pytest.mark.data
def test_an_interrupted_run_resumes_from_its_last_epoch(fashion_dir, tmp_path, monkeypatch):
    cfg = tiny(data_dir=str(fashion_dir), labels=[20], seeds=1, epochs=2, methods=["baseline"])
    cls = METHODS.get("baseline")
    original, epochs_run = cls.train_epoch, []

    def interrupt_second(self, epoch):
        epochs_run.append(epoch)
        if len(epochs_run) == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(cls, "train_epoch", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        Experiment(cfg, tmp_path, progress=False).run_all()
    monkeypatch.setattr(cls, "train_epoch", lambda self, epoch: epochs_run.append(epoch)
                        or original(self, epoch))
    Experiment(cfg, tmp_path, progress=False).run_all()
    assert epochs_run == [1, 2, 2]  # epoch 1, the interrupted epoch 2, then epoch 2 again only
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "baseline-n20-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_unknown_methods_are_refused():
    valid = "baseline, m1baseline, m1m2, m2"
    with pytest.raises(ConfigError, match=f"unknown method 'm3'; valid methods: {valid}$"):
        ExperimentConfig(methods=["m3"]).check()


def small_semi_data(n_labelled=10, n_unlabelled=50):
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(n_labelled + n_unlabelled, 1, 28, 28, generator=gen),
                        generator=gen)
    y = torch.arange(n_labelled + n_unlabelled) % 10
    return SemiData(Split(x[:n_labelled], y[:n_labelled]), Split(x[n_labelled:], y[n_labelled:]),
                    Split(x[:5], y[:5]), Split(x[:5], y[:5]))


def test_annealing_from_above_falls_linearly_to_beta():
    schedule = KLSchedule(beta=1.0, warmup_epochs=4, start=5.0)
    assert [schedule.weight(t) for t in (0.0, 1.0, 2.0, 4.0, 9.0)] == [5.0, 4.0, 3.0, 1.0, 1.0]
    assert schedule.active and not KLSchedule(beta=1.0, warmup_epochs=4, start=1.0).active


def test_m2_z_kl_weight_scales_the_z_term_and_nothing_else():
    """With weight w on z's sites the loss of a labelled batch is the ELBO's with
    w (log q(z|x,y) - log p(z)) in place of its z term: its slope in w is that log-ratio at the
    sampled z, computed here from a trace of the guide and the model; at w = 1 it is the plain
    M2 objective. On an unlabelled batch (y enumerated) the loss is affine in w too."""
    from pyro import poutine

    data = small_semi_data()
    plain = METHODS.get("m2")(data, Settings())
    torch.manual_seed(1)
    annealed = METHODS.get("m2")(data, Settings(z_kl_start=5.0, z_kl_epochs=2))
    annealed.module.load_state_dict(plain.module.state_dict())
    objective, module = annealed.optimizer.objective, annealed.module
    handler = objective.kl_weight
    assert handler.sites == {"z"} and handler.weight == 5.0
    assert plain.optimizer.objective.kl_weight is None
    labelled = next(annealed.labelled_stream)
    unlabelled = Batch(data.unlabelled.x[:8], None, torch.arange(8), len(data.unlabelled))

    def loss(w, batch, objective=objective):
        handler.weight = w
        torch.manual_seed(2)
        return float(objective.differentiable_loss(module.model, module.guide, batch).detach())

    for batch in (labelled, unlabelled):
        assert loss(1.0, batch) == pytest.approx(loss(1.0, batch, plain.optimizer.objective))
        l1, l2, l3 = loss(1.0, batch), loss(2.0, batch), loss(3.0, batch)
        assert l3 - l1 == pytest.approx(2 * (l2 - l1), rel=1e-4)
    torch.manual_seed(2)
    with torch.no_grad():
        guide = poutine.trace(module.guide).get_trace(labelled)
        model = poutine.trace(poutine.replay(module.model, trace=guide)).get_trace(labelled)
        z = guide.nodes["z"]["value"]
        log_ratio = float(guide.nodes["z"]["fn"].log_prob(z).sum()
                          - model.nodes["z"]["fn"].log_prob(z).sum())
    scale = labelled.num_data / len(labelled.x)
    assert loss(2.0, labelled) - loss(1.0, labelled) == pytest.approx(scale * log_ratio, rel=1e-3)
    with pytest.raises(ConfigError, match="--z-kl-start 0.0"):
        METHODS.get("m2")(data, Settings(z_kl_start=0.0, z_kl_epochs=1))


def test_m2_class_balance_adds_its_weight_times_n_kl_of_the_batch_mean_to_unlabelled_loss():
    """``y_balance`` = b: an unlabelled batch's loss grows by b N KL(q̄(y) || uniform), q̄ the
    batch's mean of q(y|x), computed here from the classifier; labelled batches are untouched."""
    data = small_semi_data()
    plain = METHODS.get("m2")(data, Settings())
    balanced = METHODS.get("m2")(data, Settings(y_balance=2.0))
    balanced.module.load_state_dict(plain.module.state_dict())
    labelled = next(balanced.labelled_stream)
    unlabelled = Batch(data.unlabelled.x[:8], None, torch.arange(8), len(data.unlabelled))

    def loss(method, batch):
        torch.manual_seed(2)
        objective = method.optimizer.objective
        return float(objective.differentiable_loss(method.module.model, method.module.guide,
                                                   batch).detach())

    q_bar = plain.classify(unlabelled.x).softmax(-1).mean(0).detach()
    kl = float((q_bar * (q_bar * 10).log()).sum())
    assert kl > 0
    gap = loss(balanced, unlabelled) - loss(plain, unlabelled)  # float32 losses of ~1e4
    assert gap == pytest.approx(2.0 * len(data.unlabelled) * kl, rel=1e-3)
    assert loss(balanced, labelled) == loss(plain, labelled)
    with pytest.raises(ConfigError, match="--y-balance -1.0"):
        METHODS.get("m2")(data, Settings(y_balance=-1.0))


def test_m2_with_the_closed_form_kl_weights_that_kl_and_trains():
    """``--elbo meanfield``: the z-KL weight w multiplies KL(q(z|x,y) || p(z)) in closed form,
    so a labelled batch's loss rises by the scaled analytic KL per unit of w; an epoch trains."""
    from pyro import poutine
    from torch.distributions import kl_divergence

    from aevb.inference.objectives.syncfree import TraceEnumMeanField_ELBO

    data = small_semi_data()
    torch.manual_seed(1)
    m2 = METHODS.get("m2")(data, Settings(z_kl_start=5.0, z_kl_epochs=2, elbo="meanfield"))
    objective, module, handler = m2.optimizer.objective, m2.module, m2.optimizer.objective.kl_weight
    assert isinstance(objective.elbo, TraceEnumMeanField_ELBO)
    labelled = next(m2.labelled_stream)

    def loss(w):
        handler.weight = w
        torch.manual_seed(2)
        return float(objective.differentiable_loss(module.model, module.guide, labelled).detach())

    with torch.no_grad():
        torch.manual_seed(2)
        guide = poutine.trace(module.guide).get_trace(labelled)
        model = poutine.trace(poutine.replay(module.model, trace=guide)).get_trace(labelled)
        kl = float(kl_divergence(guide.nodes["z"]["fn"], model.nodes["z"]["fn"]).sum())
    scale = labelled.num_data / len(labelled.x)
    assert loss(2.0) - loss(1.0) == pytest.approx(scale * kl, rel=1e-4)
    handler.weight = 5.0
    row = m2.train_epoch(1)
    assert math.isfinite(row["train_objective"])
    with pytest.raises(ConfigError, match="--elbo 'iwae'"):
        METHODS.get("m2")(data, Settings(elbo="iwae"))


@pytest.mark.data
def test_z_kl_weight_follows_the_epochs_across_a_resume(fashion_dir, tmp_path):
    cfg = dict(data_dir=str(fashion_dir), labels=[20], seeds=1, methods=["m2"], z_kl_start=3.0,
               z_kl_epochs=2.0)
    Experiment(tiny(epochs=1, **cfg), tmp_path, progress=False).run_all()
    Experiment(tiny(epochs=3, **cfg), tmp_path, progress=False).run_all()  # goes on from epoch 1
    rows = [json.loads(line) for line in
            (tmp_path / "runs" / "m2-n20-seed0" / "metrics.jsonl").read_text().splitlines()]
    weights = [r["z_kl_weight"] for r in rows]
    assert 2.0 < weights[0] < 2.5 and 1.0 < weights[1] < 1.5 and weights[2] == 1.0
    with pytest.raises(RunDirError, match=r"\(z_kl_start differ\)"):
        Experiment(tiny(epochs=3, **(cfg | {"z_kl_start": 5.0})), tmp_path,
                   progress=False).run_all()


@pytest.mark.data
def test_more_epochs_for_a_run_without_its_checkpoint_is_refused_before_anything_is_written(
        fashion_dir, tmp_path):
    cfg = dict(data_dir=str(fashion_dir), labels=[20], seeds=1, methods=["baseline"])
    Experiment(tiny(epochs=1, **cfg), tmp_path, progress=False).run_all()
    run_dir = tmp_path / "runs" / "baseline-n20-seed0"
    shutil.rmtree(run_dir / "checkpoints")  # as in a fresh clone, which does not hold them
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match=r"finished at 1 epochs and holds no checkpoint .* "
                                          r"--epochs 1 to read it back"):
        Experiment(tiny(epochs=2, **cfg), tmp_path, progress=False).run_all()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert Experiment(tiny(epochs=1, **cfg), tmp_path, progress=False).run_all()  # reads back


@pytest.mark.data
def test_a_folder_from_before_z_kl_annealing_reads_as_without_it(fashion_dir, tmp_path):
    cfg = tiny(data_dir=str(fashion_dir), labels=[20], seeds=1, methods=["baseline"])
    Experiment(cfg, tmp_path, progress=False).run_all()
    settings = tmp_path / "experiment.json"
    saved = json.loads(settings.read_text())
    for key in ("z_kl_start", "z_kl_epochs", "elbo"):
        del saved[key]
    settings.write_text(json.dumps(saved))  # as written before the settings existed
    Experiment(cfg, tmp_path, progress=False).run_all()  # the runs did what 1.0 / 0.0 do
    with pytest.raises(RunDirError, match=r"\(z_kl_epochs, z_kl_start differ\)"):
        Experiment(tiny(**(vars(cfg) | {"z_kl_start": 5.0, "z_kl_epochs": 2.0})), tmp_path,
                   progress=False).run_all()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_parallel_workers_end_when_the_runner_is_killed(tmp_path):
    # a runner killed by SIGKILL cannot shut its pool down: each worker must notice by itself
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(Path(__file__).with_name("orphan_worker.py")),
                               str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "worker did not start"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()

        def alive() -> bool:
            status = Path(f"/proc/{worker}/status")
            try:
                return "zombie" not in status.read_text()
            except FileNotFoundError:
                return False

        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(), "the worker kept running after its runner was killed"
    finally:
        parent.kill()
        if pid_file.is_file() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.data
def test_q_y_x_classifies_grey_levels_where_training_binarizes_dynamically(fashion_dir, tmp_path):
    """Under dynamic binarization the validation and test images q(y|x) is scored on are the
    grey levels every binarization draws from; the generative diagnostics read the fixed
    binarization; ``--classify-from binarized`` keeps that binarization for both."""
    cfg = tiny(data_dir=str(fashion_dir), labels=[20], seeds=1, methods=["baseline"])
    grey = Experiment(cfg, tmp_path / "grey", progress=False)
    data = grey.semi_data(20, 0)
    assert not set(data.test.x.unique().tolist()) <= {0.0, 1.0}
    assert set(data.observed_valid.x.unique().tolist()) <= {0.0, 1.0}
    # the grey levels are those the fixed binarization was drawn from, image for image
    bundle = grey.data()
    assert torch.equal(data.test.y, bundle.test.y)
    assert ((bundle.test.x == 1) <= (data.test.x > 0)).all()
    binarized = Experiment(tiny(**(vars(cfg) | {"classify_from": "binarized"})), tmp_path / "bin",
                           progress=False).semi_data(20, 0)
    assert torch.equal(binarized.test.x, bundle.test.x)
    assert binarized.observed_valid is binarized.valid


@pytest.mark.data
def test_a_folder_keeps_how_it_classifies_unless_told_otherwise(fashion_dir, tmp_path):
    """A folder from before ``classify_from`` classified once-binarized images: its command
    resumes it so; a new folder classifies grey levels; naming the other choice is refused."""
    def cfg(**kw):
        return tiny(data_dir=str(fashion_dir), labels=[20], seeds=1, methods=["baseline"], **kw)

    Experiment(cfg(), tmp_path, progress=False).run_all()
    settings = tmp_path / "experiment.json"
    saved = json.loads(settings.read_text())
    assert saved["classify_from"] == "grayscale"
    assert "grey-level test images" in (tmp_path / "results.md").read_text()
    del saved["classify_from"]
    settings.write_text(json.dumps(saved))  # as written before the setting existed
    Experiment(cfg(), tmp_path, progress=False).run_all()
    assert json.loads(settings.read_text())["classify_from"] == "binarized"
    assert "once-binarized test images" in (tmp_path / "results.md").read_text()
    with pytest.raises(RunDirError, match=r"\(classify_from differ\)"):
        Experiment(cfg(classify_from="grayscale"), tmp_path, progress=False).run_all()


def test_unknown_classify_from_is_refused():
    with pytest.raises(ConfigError, match="--classify-from 'gray'"):
        ExperimentConfig(classify_from="gray").check()


def test_kingma_et_al_initialization_and_weight_prior():
    """--init-sd draws every parameter from N(0, sd²); --weight-prior λ adds the N(0, I/λ) prior
    once to each method's objective: weight decay λ on M2's N-scaled loss, λ / N_labelled on the
    baseline's mean cross-entropy over labelled images."""
    data = small_semi_data()
    torch.manual_seed(0)
    m2 = METHODS.get("m2")(data, Settings(init_sd=1e-3, weight_prior=1.0))
    values = torch.cat([p.detach().flatten() for p in m2.module.parameters()])
    assert len(values) > 100_000 and values.std().item() == pytest.approx(1e-3, rel=0.01)
    assert values.mean().abs().item() < 1e-5
    assert {g["weight_decay"] for g in m2.optimizer.optimizer.param_groups} == {1.0}
    baseline = METHODS.get("baseline")(data, Settings(init_sd=1e-3, weight_prior=1.0))
    assert {g["weight_decay"] for g in baseline.optimizer.param_groups} == {1.0 / 10}
    torch.manual_seed(0)
    default = METHODS.get("m2")(data, Settings())
    values = torch.cat([p.detach().flatten() for p in default.module.parameters()])
    assert values.std().item() > 1e-2  # torch's initialization
    assert {g["weight_decay"] for g in default.optimizer.optimizer.param_groups} == {0.0}
    with pytest.raises(ConfigError, match="--init-sd 0"):
        METHODS.get("baseline")(data, Settings(init_sd=0.0))
