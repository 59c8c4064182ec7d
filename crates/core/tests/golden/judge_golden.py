"""Independent reference values for the judge's statistics (crates/core/src/judge).

Recomputes, with scipy/numpy and from the formulas in the papers rather than from the Rust
code's algebra, the quantities the judge relies on, and writes them with their inputs to
judge_golden.json. `cargo test -p canary-core --test judge_golden` recomputes them in Rust and
fails on any difference.

    pip install numpy scipy
    python3 crates/core/tests/golden/judge_golden.py

* count e-process: the likelihood ratio of each tick is the ratio of two binomial pmfs
  (scipy.stats.binom) for the canary's share of the tick's events, the mixture is over a normal
  prior on ln r discretised on the grid, summed with logsumexp;
* dispersion: cluster-robust variance ratio of the score across user groups;
* time-uniform DKW radius (Howard & Ramdas 2022, Theorem 2);
* tail threshold and histogram quantile bounds.
"""

import json
import math
import pathlib

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom, norm

STEP = 0.05
HALF = 60
LATENCY_BOUNDS = [
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
]
BUCKETS = len(LATENCY_BOUNDS) + 1


def log_likelihood_ratio(ticks, log_ratio):
    """ln of prod_t Binom(x_t; m_t, theta_t(r)) / Binom(x_t; m_t, rho_t)."""
    kept = [(x, x + y, share) for x, y, share in ticks if x + y > 0 and 0.0 < share < 1.0]
    if not kept:
        return 0.0
    x, m, share = (np.array(column, dtype=float) for column in zip(*kept))
    r = math.exp(log_ratio)
    theta = share * r / (share * r + 1.0 - share)
    return float((binom.logpmf(x, m, theta) - binom.logpmf(x, m, share)).sum())


def prior(scale):
    """Normal prior on ln r at offsets +-1..+-HALF steps, normalised over both sides."""
    offsets = np.arange(1, HALF + 1) * STEP
    density = norm.pdf(offsets, scale=scale)
    return offsets, density / (2.0 * density.sum())


def one_sided_log_e(ticks, scale, dispersion):
    offsets, weights = prior(scale)
    ll = np.array([log_likelihood_ratio(ticks, o) for o in offsets])
    return float(logsumexp(ll / dispersion, b=2.0 * weights))


def log_e_against(ticks, scale, dispersion, centre):
    offsets, weights = prior(scale)
    base = log_likelihood_ratio(ticks, centre)
    up = np.array([log_likelihood_ratio(ticks, centre + o) for o in offsets])
    down = np.array([log_likelihood_ratio(ticks, centre - o) for o in offsets])
    terms = np.concatenate([(up - base) / dispersion, (down - base) / dispersion])
    return float(logsumexp(terms, b=np.concatenate([weights, weights])))


def interval(ticks, scale, dispersion, alpha):
    threshold = math.log(1.0 / alpha)
    kept = [i for i in range(-HALF, HALF + 1)
            if log_e_against(ticks, scale, dispersion, i * STEP) < threshold]
    lower = None if kept[0] == -HALF else math.exp(kept[0] * STEP)
    upper = None if kept[-1] == HALF else math.exp(kept[-1] * STEP)
    return lower, upper


def count_cases(rng):
    cases = []
    specs = [
        # (ticks, canary share, canary rate, stable rate, prior scale, dispersion, alpha)
        (60, 0.10, 0.05, 0.01, 1.0, 1.0, 0.025),
        (200, 0.10, 0.02, 0.01, 1.5, 1.0, 0.025),
        (300, 0.25, 0.01, 0.01, 1.5, 1.0, 0.025),
        (100, 0.05, 0.03, 0.01, 1.5, 2.5, 0.01),
        (150, 0.50, 0.008, 0.01, 0.7, 1.3, 0.05),
    ]
    for n_ticks, share, canary_rate, stable_rate, scale, dispersion, alpha in specs:
        ticks = []
        for _ in range(n_ticks):
            requests = rng.poisson(100)
            canary_requests = rng.binomial(requests, share)
            stable_requests = requests - canary_requests
            x = int(rng.binomial(canary_requests, canary_rate))
            y = int(rng.binomial(stable_requests, stable_rate))
            observed = canary_requests / requests if requests else 0.0
            ticks.append([x, y, observed])
        lower, upper = interval(ticks, scale, dispersion, alpha)
        cases.append({
            "ticks": ticks,
            "priorScale": scale,
            "dispersion": dispersion,
            "alpha": alpha,
            "logEValue": one_sided_log_e(ticks, scale, dispersion),
            "twoSidedLogEValue": log_e_against(ticks, scale, dispersion, 0.0),
            "lower": lower,
            "upper": upper,
        })
    return cases


def dispersion_estimate(groups, ticks):
    """groups x ticks arrays of canary events, stable events; ticks: overall canary share."""
    x, y = groups
    share = np.asarray(ticks)
    n = x + y
    informative = (share > 0) & (share < 1)
    n = n * informative
    xs = (x * informative).sum(axis=1)
    m = (n * share).sum(axis=1)
    q = (n * share ** 2).sum(axis=1)
    active = (n.sum(axis=1) > 0)
    k = active.sum()
    c = xs.sum() / m.sum()
    residual = (xs - c * m)[active]
    variance = np.clip(c * m - c * c * q, 0, None)[active]
    estimate = k / (k - 1) * (residual ** 2).sum() / variance.sum()
    factor = max(1.0, estimate - 1.64 * math.sqrt(2.0 / (k - 1)))
    return float(estimate), float(factor)


def dispersion_cases(rng):
    cases = []
    for n_groups, n_ticks, flaky in [(16, 60, False), (32, 80, True), (8, 50, True)]:
        share = rng.uniform(0.05, 0.3, size=n_ticks)
        # Group error rates: equal, or a few flaky groups whose users all landed on one side.
        boost = np.ones(n_groups)
        if flaky:
            boost[rng.choice(n_groups, size=max(1, n_groups // 8), replace=False)] = 8.0
        x = rng.poisson(0.05 * boost[:, None] * share[None, :])
        y = rng.poisson(0.05 * (1 - share[None, :]) * np.ones((n_groups, 1)))
        estimate, factor = dispersion_estimate((x, y), share)
        cases.append({
            "canary": x.tolist(),
            "stable": y.tolist(),
            "shares": share.tolist(),
            "estimate": estimate,
            "factor": factor,
        })
    return cases


def dkw_cases():
    out = []
    for n in [1, 2, 10, 137, 1000, 54321, 1e6]:
        for alpha in [0.05, 0.0025, 0.001]:
            radius = 0.85 * math.sqrt((math.log(math.log(math.e * n)) + 0.8 * math.log(1612 / alpha)) / n)
            out.append({"samples": n, "alpha": alpha, "radius": min(1.0, radius)})
    return out


def histogram_cases(rng):
    out = []
    for median, sigma, count in [(0.05, 0.5, 20000), (0.004, 0.8, 5000), (0.3, 0.3, 800)]:
        latencies = rng.lognormal(math.log(median), sigma, size=count)
        histogram = np.bincount(np.searchsorted(LATENCY_BOUNDS, latencies, side="left"),
                                minlength=BUCKETS)
        total = histogram.sum()
        above = total - np.cumsum(histogram)[:-1]
        candidates = [(abs(math.log(a / total / 0.01)), b) for b, a in enumerate(above) if a > 0]
        best = min(candidates)[1]
        bounds = []
        for q, radius in [(0.5, 0.0), (0.5, 0.05), (0.9, 0.02), (0.99, 0.1)]:
            cdf = np.cumsum(histogram)[:-1] / total
            lower = next((b for b, f in enumerate(cdf) if f + radius >= q), BUCKETS - 1)
            upper = next((b for b, f in enumerate(cdf) if f - radius >= q), BUCKETS - 1)
            bounds.append({"quantile": q, "radius": radius, "lower": lower, "upper": upper})
        out.append({
            "histogram": histogram.tolist(),
            "tailBucket": best,
            "tailShare": float(above[best] / total),
            "quantileBuckets": bounds,
        })
    return out


def main():
    rng = np.random.default_rng(20240611)
    golden = {
        "grid": {"step": STEP, "halfPoints": HALF},
        "count": count_cases(rng),
        "dispersion": dispersion_cases(rng),
        "dkw": dkw_cases(),
        "histograms": histogram_cases(rng),
    }
    path = pathlib.Path(__file__).with_name("judge_golden.json")
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
