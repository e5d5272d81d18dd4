"""Allocation speed and accuracy: exact integration vs Monte Carlo.

    python benchmarks/allocation.py [--repeats 15]

For 2, 10 and 50 variants at counts from 10^3 to 10^7 (and very unequal counts, 10^3
beside 10^7), prints the median time of mabapi's probability-of-best integration and
of Monte Carlo with 10^4 and 10^6 draws, and each one's largest error against a
reference computed independently with scipy's adaptive quadrature (QUADPACK).
Times are also given as a ratio to a 10^4-draw Monte Carlo measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from scipy import integrate, special, stats

from mabapi.stats.allocation import probability_best
from mabapi.stats.decision import sample_posteriors
from mabapi.stats.posterior import (
    BetaPosterior,
    NormalInverseGammaPosterior,
    Posterior,
    ValueSummary,
)


def scenario(variants: int, trials: int, *, unequal: bool = False) -> list[BetaPosterior]:
    """Rates spread 5.0% .. 5.5%; with `unequal`, every other variant has 10^3 trials."""
    result = []
    for index in range(variants):
        n = 1_000 if unequal and index % 2 == 0 else trials
        rate = 0.05 + 0.005 * index / max(variants - 1, 1)
        successes = round(n * rate)
        result.append(BetaPosterior(1 + successes, 1 + n - successes))
    return result


def value_scenario(variants: int, units: int) -> list[NormalInverseGammaPosterior]:
    """Revenue per visitor around 2.50 with a standard deviation of 10 (heavy, like
    real order values), means spread by 2% across variants."""
    result = []
    for index in range(variants):
        mean = 2.5 * (1 + 0.02 * index / max(variants - 1, 1))
        total = mean * units
        squares = units * (100.0 + mean * mean)
        result.append(NormalInverseGammaPosterior.from_summary(ValueSummary(units, total, squares)))
    return result


def reference_t(posteriors: list[NormalInverseGammaPosterior]) -> np.ndarray:
    """P(i best) for Student-t marginals by QUADPACK, one variant at a time."""
    dists = [stats.t(p.degrees_of_freedom, loc=p.mu, scale=p.scale) for p in posteriors]
    lower = max(d.ppf(1e-14) for d in dists)
    upper = max(d.ppf(1 - 1e-14) for d in dists)
    out = np.zeros(len(posteriors))
    for i, dist in enumerate(dists):
        others = [d for j, d in enumerate(dists) if j != i]

        def integrand(x: float, dist: object = dist, others: list[object] = others) -> float:
            value = dist.pdf(x)  # type: ignore[attr-defined]
            for other in others:
                value *= other.cdf(x)  # type: ignore[attr-defined]
            return float(value)

        lo, hi = max(lower, dist.ppf(1e-14)), min(upper, dist.ppf(1 - 1e-14))
        if hi <= lo:
            continue
        points = np.clip(dist.ppf([0.001, 0.1, 0.5, 0.9, 0.999]), lo, hi)
        out[i] = integrate.quad(
            integrand, lo, hi, points=np.unique(points)[1:-1], epsabs=1e-14, epsrel=1e-12,
            limit=2000,
        )[0]  # fmt: skip
    return out


def reference(posteriors: list[BetaPosterior]) -> np.ndarray:
    """P(i best) by QUADPACK on each variant separately, with its quantiles as breakpoints."""
    alphas = np.array([p.alpha for p in posteriors])
    betas = np.array([p.beta for p in posteriors])
    lower = float(special.betaincinv(alphas, betas, 1e-14).max())
    upper = float(special.betaincinv(alphas, betas, 1 - 1e-14).max())
    out = np.zeros(len(posteriors))
    for i, p in enumerate(posteriors):
        others = np.arange(len(posteriors)) != i

        def integrand(x: float, p: BetaPosterior = p, others: np.ndarray = others) -> float:
            log_pdf = (
                special.xlogy(p.alpha - 1, x)
                + special.xlog1py(p.beta - 1, -x)
                - special.betaln(p.alpha, p.beta)
            )
            with np.errstate(divide="ignore"):
                log_cdf = np.log(special.betainc(alphas[others], betas[others], x)).sum()
            return float(np.exp(log_pdf + log_cdf))

        lo = max(lower, float(special.betaincinv(p.alpha, p.beta, 1e-14)))
        hi = min(upper, float(special.betaincinv(p.alpha, p.beta, 1 - 1e-14)))
        if hi <= lo:
            continue
        points = np.unique(
            np.clip(special.betaincinv(p.alpha, p.beta, [0.001, 0.1, 0.5, 0.9, 0.999]), lo, hi)
        )
        value, _ = integrate.quad(
            integrand, lo, hi, points=points[1:-1], epsabs=1e-14, epsrel=1e-12, limit=2000
        )
        out[i] = value
    return out


def monte_carlo(posteriors: Sequence[Posterior], draws: int, seed: int = 1) -> np.ndarray:
    samples = sample_posteriors(posteriors, draws, np.random.default_rng(seed))
    return np.bincount(samples.argmax(axis=0), minlength=len(posteriors)) / draws


def median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cases: list[tuple[int, int, bool | str]] = [
        (k, n, unequal)
        for k in (2, 10, 50)
        for n, unequal in ((1_000, False), (100_000, False), (10_000_000, False), (10**7, True))
    ]
    cases += [(k, n, "value") for k in (2, 10, 50) for n in (1_000, 1_000_000)]
    header = (
        f"{'K':>3} {'trials':>16} | {'exact ms':>9} {'err':>8} | {'MC1e4 ms':>9} {'err':>8}"
        f" | {'MC1e6 ms':>9} {'err':>8} | {'exact/MC1e4':>11}"
    )
    print(header)
    print("-" * len(header))
    for k, n, unequal in cases:
        posteriors: Sequence[Posterior]
        if unequal == "value":
            values = value_scenario(k, n)
            posteriors, truth = values, reference_t(values)
        else:
            betas = scenario(k, n, unequal=bool(unequal))
            posteriors, truth = betas, reference(betas)
        exact = probability_best(posteriors)
        exact_ms = median_ms(partial(probability_best, posteriors), args.repeats)
        mc4 = monte_carlo(posteriors, 10_000)
        mc4_ms = median_ms(partial(monte_carlo, posteriors, 10_000), args.repeats)
        mc6 = monte_carlo(posteriors, 1_000_000)
        mc6_ms = median_ms(partial(monte_carlo, posteriors, 1_000_000), 3)
        label = f"10^3/10^{round(np.log10(n))}" if unequal else f"10^{round(np.log10(n))}"
        if unequal == "value":
            label = f"value 10^{round(np.log10(n))}"
        print(
            f"{k:>3} {label:>16} | {exact_ms:9.2f} {np.abs(exact - truth).max():8.1e} | "
            f"{mc4_ms:9.2f} {np.abs(mc4 - truth).max():8.1e} | "
            f"{mc6_ms:9.1f} {np.abs(mc6 - truth).max():8.1e} | {exact_ms / mc4_ms:11.2f}"
        )


if __name__ == "__main__":
    main()
