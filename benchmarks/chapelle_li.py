"""Reproduce Table 1 of Chapelle & Li, "An Empirical Evaluation of Thompson Sampling"
(NIPS 2011): Thompson sampling's regret when feedback arrives in batches.

    python benchmarks/chapelle_li.py [--quick] [--steps 1000000] [--runs 100]

Setup, as in the paper: 10 items whose click rates are drawn from Beta(4, 4); at every
step, with probability 10^-3, one item (chosen at random) is replaced by a new one with a
fresh rate;
T = 10^6 steps; the posterior (Beta(1, 1) prior) is updated every `delta` steps;
100 repetitions; regret = sum over steps of (best rate - chosen rate).

How retired items are handled (the paper does not say): when an item is replaced, the
feedback it was still owed is dropped, and its replacement starts from Beta(1, 1) and
can be chosen at once. Draws are vectorised across the repetitions (each has its own
items and posteriors); every step draws one Beta sample per item, as Thompson sampling
does per request.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

PAPER_THOMPSON = {1: 9105, 3: 9199, 10: 9049, 32: 9451, 100: 11550}
ITEMS = 10
REPLACE_PROBABILITY = 1e-3


def simulate(delta: int, *, steps: int, runs: int, seed: int) -> np.ndarray:
    """Total regret of each repetition."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(4.0, 4.0, size=(runs, ITEMS))
    alpha = np.ones((runs, ITEMS))
    beta = np.ones((runs, ITEMS))
    pending_clicks = np.zeros((runs, ITEMS))
    pending_views = np.zeros((runs, ITEMS))
    regret = np.zeros(runs)
    rows = np.arange(runs)
    for step in range(steps):
        replacing = np.flatnonzero(rng.random(runs) < REPLACE_PROBABILITY)
        if replacing.size:
            items = rng.integers(0, ITEMS, replacing.size)
            rates[replacing, items] = rng.beta(4.0, 4.0, size=replacing.size)
            alpha[replacing, items] = 1.0
            beta[replacing, items] = 1.0
            pending_clicks[replacing, items] = 0.0
            pending_views[replacing, items] = 0.0
        chosen = rng.beta(alpha, beta).argmax(axis=1)
        chosen_rate = rates[rows, chosen]
        regret += rates.max(axis=1) - chosen_rate
        clicks = rng.random(runs) < chosen_rate
        pending_views[rows, chosen] += 1.0
        pending_clicks[rows, chosen] += clicks
        if (step + 1) % delta == 0:
            alpha += pending_clicks
            beta += pending_views - pending_clicks
            pending_clicks[:] = 0.0
            pending_views[:] = 0.0
    return regret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10^4 steps, 10 runs")
    parser.add_argument("--deltas", default="1,3,10,32,100")
    args = parser.parse_args()
    steps, runs = (10_000, 10) if args.quick else (args.steps, args.runs)
    deltas = [int(d) for d in args.deltas.split(",")]
    print(f"{steps:,} steps, {runs} runs\n")
    print("| delta | paper (Thompson) | mabapi reproduction (mean ± se) | ratio | seconds |")
    print("|---|---|---|---|---|")
    for delta in deltas:
        started = time.perf_counter()
        regret = simulate(delta, steps=steps, runs=runs, seed=delta)
        elapsed = time.perf_counter() - started
        mean, se = regret.mean(), regret.std(ddof=1) / np.sqrt(runs)
        paper = PAPER_THOMPSON.get(delta)
        ratio = f"{mean / paper:.3f}" if paper and steps == 1_000_000 else "-"
        print(f"| {delta} | {paper or '-'} | {mean:,.0f} ± {se:,.0f} | {ratio} | {elapsed:.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
