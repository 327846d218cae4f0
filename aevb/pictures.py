"""Pictures of a run: image grids, the latent space, the learned manifold and learning curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aevb.models.base import call_with_labels  # noqa: E402


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """Save images as one grid with ``nrow`` images per row, in the format its suffix names (PNG
    where PIL knows none), written atomically, its folder made if missing, as every file aevb
    writes."""
    from PIL import Image
    from torchvision.utils import save_image  # here: torchvision's import costs seconds

    from aevb.inference.training.checkpoint import atomic_write_bytes

    path = Path(path)
    kind = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    grid = images.detach().float().clamp(0, 1).cpu()
    atomic_write_bytes(path, lambda f: save_image(grid, f, format=kind, nrow=nrow, padding=2,
                                                  pad_value=1.0))


@torch.no_grad()
def samples(model, path: Path, n: int = 64) -> None:
    """Means of p(x|z) for z from the prior."""
    save_grid(model.generate(n), path, nrow=int(n ** 0.5) or 1)


@torch.no_grad()
def reconstructions(model, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> None:
    """Rows alternate inputs and their reconstructions (means of p(x|z) at the posterior mean)."""
    x, y = x[:32], (y[:32] if y is not None else None)
    recon = call_with_labels(model, "reconstruct", x, y)
    rows = []
    for i in range(0, len(x), 8):
        rows += [x[i:i + 8], recon[i:i + 8]]
    save_grid(torch.cat(rows), path, nrow=8)


@torch.no_grad()
def latent(model, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> None:
    """Posterior means coloured by label (where there are labels); projected on two principal
    components if z_dim > 2."""
    z = call_with_labels(model, "encode", x, y).float().reshape(len(x), -1).cpu()
    title = "posterior means"
    if z.shape[1] > 2:
        z = z - z.mean(0)
        _, _, v = torch.pca_lowrank(z, q=2, center=False)
        z = z @ v[:, :2]
        title += " (first two principal components)"
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    if y is not None:
        sc = ax.scatter(z[:, 0], z[:, 1], c=y.cpu(), cmap="tab10", s=4, alpha=0.7)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def manifold(model, path: Path, n: int = 20) -> None:
    """Decoder means over a grid of z through the inverse Gaussian CDF (the paper's Figure 4)."""
    device = next(model.parameters()).device
    p = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=device)
    grid = torch.distributions.Normal(0.0, 1.0).icdf(p)
    z = torch.stack(torch.meshgrid(grid, grid.flip(0), indexing="xy"), -1).reshape(-1, 2)
    save_grid(model.decode(z), path, nrow=n)


def curves(rows: list[dict], path: Path) -> None:
    """Train objective and validation ELBO per epoch (nats per datapoint)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in rows]
    for key, label in (("train_objective", "train objective"), ("valid_elbo", "validation ELBO")):
        if rows and key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
    _finish(fig, ax, path, "epoch", "nats per datapoint")


def accuracy_vs_labels(rows: list[dict], path: Path) -> None:
    """Test accuracy (mean and 95% interval over seeds) against the number of labels."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        ci = [0.0 if math.isnan(r["ci95"]) else 100 * r["ci95"] for r in mine]
        ax.errorbar([r["labels"] for r in mine], [100 * r["accuracy"] for r in mine], yerr=ci,
                    marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    _finish(fig, ax, path, "labelled training images", "test accuracy (%)")


def gradient_bars(rows, path: Path) -> None:
    """Gradient variance (log scale) and median SNR per estimator, encoder and decoder bars."""
    estimators = list(dict.fromkeys(r.estimator for r in rows))
    groups = list(dict.fromkeys(r.group for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        by = {r.estimator: r for r in rows if r.group == g}
        xs = [j + i * width for j in range(len(estimators))]
        axes[0].bar(xs, [by[e].variance for e in estimators], width, label=g)
        axes[1].bar(xs, [by[e].snr for e in estimators], width, label=g)
    for ax, title in zip(axes, ("mean gradient variance", "median signal-to-noise ratio"),
                         strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(estimators))], estimators)
        ax.set_title(title)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(model, split, rows: list[dict], run_dir: Path, n: int = 64) -> list[str]:
    """Every picture the model supports, from the images of ``split`` (the test split, or the
    validation split of data without one); returns the file names written."""
    run_dir = Path(run_dir)
    written = []
    model.eval()
    x = split.x[:2000]
    y = split.y[:2000] if split.y is not None else None
    if getattr(model, "labels", "unused") == "required" and y is None:
        y = torch.zeros(len(x), dtype=torch.long, device=x.device)
    images = x.dim() == 4 and x.shape[1] in (1, 3)  # grids only of grayscale or RGB images
    if images and hasattr(model, "generate"):
        samples(model, run_dir / "samples.png", n)
        written.append("samples.png")
    if images and hasattr(model, "reconstruct"):
        reconstructions(model, x, y, run_dir / "reconstructions.png")
        written.append("reconstructions.png")
    if hasattr(model, "encode"):
        latent(model, x, y, run_dir / "latent.png")
        written.append("latent.png")
    if images and getattr(model, "z_dim", None) == 2 and hasattr(model, "decode"):
        manifold(model, run_dir / "manifold.png")
        written.append("manifold.png")
    if rows:
        curves(rows, run_dir / "curves.png")
        written.append("curves.png")
    return written
