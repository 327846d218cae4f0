"""Matching the aggregate posterior to the prior: the ELBO, the adversarial autoencoder and
InfoVAE's adversarial and MMD divergences, side by side in a 2-D latent space (Makhzani et al.
2015, Figure 2's question; Zhao et al. 2019, eq. 6).

For each ``--variants`` objective a 784-500-z2 tanh VAE (``configs/vae_fashion_2d.yaml``)
trains for ``--epochs`` epochs on dynamically binarized ``--dataset`` (a run folder under
``--out``; a finished run is reused, an unfinished one resumes). On the first ``--images``
test images the table gives the MMD² between the posterior means and as many prior draws
(Gaussian kernel, h = 2, the mean of 10 draws of the prior sample), the aggregate posterior's
mean and covariance against the prior's (0 and I), and the test ELBO (one sample, all test
images, nats). ``latents.png`` shows each variant's posterior means coloured by class above
64 decodings of prior draws: where q(z) covers p(z) evenly, every prior draw decodes to an
image. A second call reuses the finished runs and only measures and draws again.

    python benchmarks/adversarial.py --dataset mnist --data-dir ../shared/data/mnist
    python benchmarks/adversarial.py --dataset fashion-mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: variant -> (what it is, its overrides)
VARIANTS = {
    "elbo": ("VAE: the ELBO (KL per datapoint)", ["elbo=elbo"]),
    "aae": ("adversarial autoencoder: α = 1, λ = 1, critic's KL(q(z) ‖ p(z))", ["elbo=aae"]),
    "adversarial20": ("InfoVAE α = 1, λ = 20, adversarial divergence",
                      ["elbo=infovae", "info_alpha=1", "info_lambda=20",
                       "info_divergence=adversarial"]),
    "mmd": ("MMD-VAE: α = 1, λ = 1000, MMD²", ["elbo=mmd"]),
    "autoencoder": ("no divergence: α = 1, λ = 0", ["elbo=infovae", "info_alpha=1",
                                                    "info_lambda=0"]),
}


def train(name: str, args):
    import aevb

    overrides = [f"data.name={args.dataset}", f"train.epochs={args.epochs}",
                 f"train.progress={str(args.progress).lower()}", *VARIANTS[name][1]]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.train_size:
        overrides += [f"data.train_size={args.train_size}", f"data.test_size={args.images}"]
    run_dir = args.out / args.dataset / "runs" / name
    finished = (run_dir / "checkpoints" / f"epoch-{args.epochs:04d}.pt").is_file()
    return (aevb.load(run_dir) if finished else
            aevb.fit("vae", config="vae_fashion_2d", overrides=overrides, run_dir=run_dir,
                     resume=run_dir.is_dir(), evaluate=False))


def measure(name: str, run, images: int) -> dict:
    import torch

    from aevb.inference.evaluation.likelihood import mean_elbo
    from aevb.inference.objectives.mmd import mmd2_unbiased

    test = run.data.test
    x = test.x[:images]
    with torch.no_grad():
        z = run.model.encode(x).reshape(len(x), -1)
        generator = torch.Generator().manual_seed(0)
        mmd = torch.stack([mmd2_unbiased(z, torch.randn(z.shape, generator=generator), 2.0)
                           for _ in range(10)]).mean()
        torch.manual_seed(0)
        elbo = mean_elbo(run.model, test)
    cov = torch.cov(z.T)
    return {"variant": name, "mmd2": float(mmd), "mean": z.mean(0).tolist(),
            "cov": cov.tolist(), "test_elbo": elbo, "images": len(x),
            "epochs": len(run.metrics), "dataset": run.config.data.name}


def table(rows: list[dict]) -> str:
    first = rows[0]
    lines = [f"{first['dataset']}, dynamically binarized; 784-500-z2 tanh VAE, {first['epochs']}"
             f" epochs, seed 0; statistics of the posterior means of the first "
             f"{first['images']} test images; test ELBO over the whole test set (nats)", "",
             "| variant | objective | MMD² to p(z) | mean of q(z) | covariance of q(z) | "
             "test ELBO |", "|---|---|---|---|---|---|"]
    for r in rows:
        (a, b), (c, d) = r["cov"]
        lines.append(f"| {r['variant']} | {VARIANTS[r['variant']][0]} | {r['mmd2']:.4f} | "
                     f"({r['mean'][0]:.2f}, {r['mean'][1]:.2f}) | [[{a:.2f}, {b:.2f}], "
                     f"[{c:.2f}, {d:.2f}]] | {r['test_elbo']:.2f} |")
    return "\n".join(lines) + "\n"


def picture(runs: dict, images: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(2, len(runs), figsize=(3.2 * len(runs), 6.6), squeeze=False)
    for i, (name, run) in enumerate(runs.items()):
        x, y = run.data.test.x[:images], run.data.test.y
        with torch.no_grad():
            z = run.model.encode(x).reshape(len(x), -1).cpu().numpy()
            torch.manual_seed(0)
            decoded = run.model.generate(64).cpu().clamp(0, 1)
        ax = axes[0, i]
        colours = None if y is None else y[:images].cpu().numpy()
        ax.scatter(z[:, 0], z[:, 1], c=colours, cmap="tab10", s=2, alpha=0.6)
        for radius in (1, 2):
            ax.add_patch(plt.Circle((0, 0), radius, fill=False, ls="--", lw=0.8, color="k"))
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
        ax.set_title(name)
        axes[1, i].imshow(make_grid(decoded, nrow=8, pad_value=1.0).permute(1, 2, 0).numpy())
        axes[1, i].axis("off")
    axes[0, 0].set_ylabel("posterior means (circles: 1 and 2 sd of p(z))")
    axes[1, 0].set_title("decoded prior draws", loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="elbo,aae,adversarial20,mmd,autoencoder")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adversarial")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-size", type=int, default=None, help="smoke tests only")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    folder = args.out / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    runs, rows = {}, []
    for name in names:
        runs[name] = train(name, args)
        rows.append(measure(name, runs[name], args.images))
        (folder / "results.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    (folder / "results.md").write_text(text)
    picture(runs, args.images, folder / "latents.png")
    print(text)
    print(f"picture: {folder / 'latents.png'}")


if __name__ == "__main__":
    main()
