"""Training throughput: aevb's SVI loop against a hand-written PyTorch VAE loop.

Both train the same 784-400-z50 MLP VAE (tanh, Bernoulli likelihood) on the same
dynamically-binarized Fashion-MNIST training images, batch 128, Adam, in one process, with
epochs interleaved (ours, hand-written, ours, ...) so that both see the same machine state.
The hand-written loop computes the same estimator as the objective (``elbo``: one reparameterized
sample, KL sampled; ``meanfield``: KL analytic), scaled by N/M like Pyro's plate.

    python benchmarks/throughput.py --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from inference.config import load_config
from inference.data import Split, load_data
from inference.objectives import build_objective
from inference.training import build_model, resolve_device, train_epoch


def handwritten_epoch(model, optimizer, split: Split, batch_size: int, analytic_kl: bool) -> float:
    """One epoch of a plain PyTorch VAE: returns seconds."""
    n = len(split)
    start = time.perf_counter()
    for batch in split.batches(batch_size, shuffle=True, scaled=True):
        x = batch.x
        loc, raw = model.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-5
        z = loc + scale * torch.randn_like(loc)
        logits = model.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        if analytic_kl:
            kl = 0.5 * (loc ** 2 + scale ** 2 - 1 - 2 * scale.log()).sum(1)
        else:
            prior = torch.distributions.Normal(0.0, 1.0)
            post = torch.distributions.Normal(loc, scale)
            kl = (post.log_prob(z) - prior.log_prob(z)).sum(1)
        loss = -(n / len(x)) * (log_px - kl).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if split.x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--objective", default="elbo", choices=["elbo", "meanfield"])
    p.add_argument("--train-size", type=int, default=None, help="first n training images (all 50k)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)

    overrides = [f"elbo={args.objective}", f"train.batch_size={args.batch_size}",
                 "model.hidden_sizes=[400]", "model.z_dim=50", f"device={args.device}"]
    if args.train_size:
        overrides.append(f"data.train_size={args.train_size}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = load_config("configs/vae_fashion.yaml", overrides)
    device = resolve_device(cfg.device)
    data = load_data(cfg.data, device)
    torch.manual_seed(0)
    ours = build_model(cfg.model, (1, 28, 28)).to(device)
    torch.manual_seed(0)
    hand = build_model(cfg.model, (1, 28, 28)).to(device)
    objective = build_objective(cfg.elbo, 1)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=cfg.optim.lr)
    opt_hand = torch.optim.Adam(hand.parameters(), lr=cfg.optim.lr)

    # warm-up (allocator, Pyro's plate-nesting guess), not timed
    handwritten_epoch(hand, opt_hand, Split(data.train.x[:512], data.train.y[:512], True),
                      args.batch_size, args.objective == "meanfield")
    train_epoch(ours, objective, opt_ours, Split(data.train.x[:512], data.train.y[:512], True),
                args.batch_size, progress=False)
    t_ours, t_hand = [], []
    for epoch in range(args.epochs):
        row = train_epoch(ours, objective, opt_ours, data.train, args.batch_size, progress=False)
        t_ours.append(row["seconds"])
        t_hand.append(handwritten_epoch(hand, opt_hand, data.train, args.batch_size,
                                        args.objective == "meanfield"))
        print(f"epoch {epoch + 1}: aevb {t_ours[-1]:.2f} s, hand-written {t_hand[-1]:.2f} s, "
              f"aevb train ELBO {row['train_objective']:.2f}")
    steps = -(-len(data.train) // args.batch_size)
    mo, mh = statistics.median(t_ours), statistics.median(t_hand)
    print(f"\n{cfg.data.name}, {len(data.train)} training images, batch {args.batch_size}, "
          f"784-400-z50, objective {args.objective}, device {device}, "
          f"{torch.get_num_threads()} threads, median of {args.epochs} epochs")
    print(f"| loop | s/epoch | ms/step |\n|---|---|---|\n"
          f"| aevb ({args.objective}) | {mo:.2f} | {1000 * mo / steps:.2f} |\n"
          f"| hand-written PyTorch | {mh:.2f} | {1000 * mh / steps:.2f} |")
    print(f"ratio aevb / hand-written: {mo / mh:.2f}x")


if __name__ == "__main__":
    main()
