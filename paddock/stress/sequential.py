"""A sequential SLO gate: end a stress step as soon as its verdict is settled.

A fixed-size run spends the same requests on a model that misses its SLO by a mile as on
one that sits on the line. Every gated figure is a statement about a *fraction* of requests,
so each can be tested as it accrues:

- median TTFT ≤ T  ⟺ at least 1/2 of requests have TTFT ≤ T (likewise median TPOT and
  median words per minute ≥ W);
- p99 E2EL ≤ T     ⟺ at least 99 % of requests end within T;
- error rate ≤ r   ⟺ at least 1 − r of requests succeed;
- good fraction ≥ g ⟺ at least g of requests meet every per-request limit.

Per figure, the requests counted so far on the good side of its threshold are a binomial
count. A look *passes* the figure when that count is too high to come from a true fraction
at the requirement (a one-sided exact binomial test, i.e. the Clopper–Pearson bound clears
it), and *fails* it when the count is too low. The step's verdict is settled when one
figure fails, or when every figure passes; otherwise it runs to its cap (``num_requests``)
and is judged on its point figures as before (`paddock.stress.slo.evaluate`).

The error rates are honest over everything that is looked at:

- each look's level is calibrated (exact dynamic programming over the binomial paths, up
  to the cap) so that the chance of *any* look crossing a boundary, for a fraction sitting
  exactly at the requirement, stays within the figure's share of ``1 - confidence``;
- that share is ``1 - confidence`` divided by the number of figures times gated steps
  (Bonferroni), so a wrong early verdict on the whole gate stays below ``1 - confidence``;
- fast requests finish first, and a look must not mistake that for a fast server: it
  reads the requests in the order they were sent, either up to the first one still in
  flight, or all of them with those in flight counted against the verdict being tested
  (as bad for a pass, as good for a fail).

What it cannot do is settle a pass on little data: at 95 %, with one look at one figure, a
median needs 5 good requests in a row, an error rate ≤ 5 % 59 clean ones and a p99 299;
with the looks and figures of a whole gate about twice that (a median ~11, a 5 % error
limit ~120-150, a 1 % one ~650). A figure
whose threshold the request timeout already enforces (a p99 E2EL limit at or above the
timeout: a slower request is a timeout, counted as an error) is settled from the start.

Stopping sends no new requests; those in flight finish (the sample stays a plain run of
``n`` requests, as ``vllm bench serve --num-prompts n`` would measure it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from paddock.stress.profiles import LoadProfile
from paddock.stress.results import RequestResult
from paddock.stress.slo import Slo

__all__ = ["Verdict", "StopRule", "Check", "checks_for", "boundaries", "StepGate", "gate_for"]

Verdict = Literal["pass", "fail"]
StopRule = Callable[[Sequence[RequestResult]], Verdict | None]

# Beyond this cap the exact calibration's O(cap²) cost is not worth it: each look gets an
# equal share of the error instead (Bonferroni over the looks).
_EXACT_CAP = 2000


@dataclass(frozen=True)
class Check:
    """One gated figure: the fraction of its requests that must be good, and which are."""

    name: str
    need: float
    # A finished request → good (True), bad (False) or not part of this figure (None).
    classify: Callable[[RequestResult], bool | None]


def finished(r: RequestResult) -> bool:
    return r.success or r.timed_out or bool(r.error)


def _out_len(r: RequestResult) -> int:
    return r.output_tokens or (len(r.itl) + 1)  # as `calculate_metrics`


def _tpot(r: RequestResult) -> float:
    n = _out_len(r)
    return (r.latency - r.ttft) / (n - 1) if n > 1 else 0.0


def _wpm(r: RequestResult) -> float | None:
    decode_s = r.latency - r.ttft
    if not r.itl or decode_s <= 0:
        return None
    return len(r.text.split()) * 60.0 / decode_s


def checks_for(slo: Slo, profile: LoadProfile) -> list[Check]:
    """The figures of ``slo`` that can go either way, each as a fraction to test."""
    out: list[Check] = []
    if slo.ttft_p50_ms is not None:
        t = slo.ttft_p50_ms / 1000

        out.append(Check("ttft_p50_ms", 0.5, lambda r: r.ttft <= t if r.success else None))
    if slo.tpot_p50_ms is not None:
        t2 = slo.tpot_p50_ms / 1000

        def tpot_ok(r: RequestResult) -> bool | None:
            return _tpot(r) <= t2 if r.success and _out_len(r) > 1 else None

        out.append(Check("tpot_p50_ms", 0.5, tpot_ok))
    # A p99 limit the request timeout already enforces is met by every completed request.
    if slo.e2el_p99_ms is not None and slo.e2el_p99_ms < profile.request_timeout_s * 1000:
        t3 = slo.e2el_p99_ms / 1000
        out.append(Check("e2el_p99_ms", 0.99, lambda r: r.latency <= t3 if r.success else None))
    if slo.min_words_per_minute:
        w = slo.min_words_per_minute

        def wpm_ok(r: RequestResult) -> bool | None:
            got = _wpm(r) if r.success else None
            return None if got is None else got >= w

        out.append(Check("min_words_per_minute", 0.5, wpm_ok))
    if slo.max_error_rate < 1:
        out.append(Check("max_error_rate", 1 - slo.max_error_rate, lambda r: r.success))
    limits = {
        k: v / 1000
        for k, v in (
            ("ttft", slo.goodput_ttft_ms),
            ("tpot", slo.goodput_tpot_ms),
            ("e2el", slo.goodput_e2el_ms),
        )
        if v is not None
    }
    if slo.min_good_fraction and limits:

        def good(r: RequestResult) -> bool:
            if not r.success:
                return False
            got = {"ttft": r.ttft, "tpot": _tpot(r), "e2el": r.latency}
            return all(got[k] <= lim for k, lim in limits.items())

        out.append(Check("min_good_fraction", slo.min_good_fraction, good))
    return out


def _bounds(need: float, cap: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per n = 0..cap: pass when good ≥ pass_at[n], fail when good ≤ fail_at[n]."""
    from scipy.stats import binom  # ~1 s of imports, only for a profile with the gate

    n = np.arange(cap + 1)
    # P(X ≥ isf + 1) ≤ level for X ~ Bin(n, need): a pass that a fraction at the
    # requirement reaches with at most that probability (n + 1: out of reach).
    pass_at = binom.isf(level, n, need).astype(np.int64) + 1
    # P(X ≤ ppf − 1) < level: the mirror image for a fail (−1: out of reach).
    fail_at = binom.ppf(level, n, need).astype(np.int64) - 1
    pass_at[0], fail_at[0] = 1, -1
    return pass_at, fail_at


def _crossing(need: float, bounds: np.ndarray, side: Literal["pass", "fail"]) -> float:
    """P(some n ≤ cap crosses the boundary) when the true fraction is exactly ``need``."""
    dist = np.ones(1)
    crossed = 0.0
    for n in range(1, len(bounds)):
        nxt = np.zeros(n + 1)
        nxt[:-1] += dist * (1 - need)
        nxt[1:] += dist * need
        k = int(bounds[n])
        if side == "pass" and k <= n:
            crossed += float(nxt[k:].sum())
            nxt[k:] = 0.0
        elif side == "fail" and k >= 0:
            crossed += float(nxt[: k + 1].sum())
            nxt[: k + 1] = 0.0
        dist = nxt
    return crossed


@lru_cache(maxsize=256)
def boundaries(need: float, cap: int, alpha: float, looks: int) -> tuple[np.ndarray, np.ndarray]:
    """(pass_at, fail_at) for n = 0..cap, each side's chance of a wrong verdict over all
    looks at most ``alpha``; ``looks`` bounds the number of looks (used beyond the exact
    calibration's cap)."""
    if cap > _EXACT_CAP:
        return _bounds(need, cap, alpha / max(looks, 1))
    sides: list[np.ndarray] = []
    order: tuple[Literal["pass", "fail"], ...] = ("pass", "fail")
    for index, side in enumerate(order):
        # The largest per-look level whose overall crossing stays within alpha (a step
        # function of the level, so bisect on its logarithm).
        lo, hi = np.log(alpha / max(cap, 1)), np.log(alpha)
        if _crossing(need, _bounds(need, cap, alpha)[index], side) <= alpha:
            lo = hi
        for _ in range(30):
            if hi - lo < 1e-3:
                break
            mid = (lo + hi) / 2
            if _crossing(need, _bounds(need, cap, float(np.exp(mid)))[index], side) <= alpha:
                lo = mid
            else:
                hi = mid
        sides.append(_bounds(need, cap, float(np.exp(lo)))[index])
    return sides[0], sides[1]


class StepGate:
    """The stop rule of one gated step: a verdict once it is settled, else None."""

    def __init__(self, checks: Sequence[Check], cap: int, alpha: float, looks: int) -> None:
        self.checks = list(checks)
        self.cap = cap
        self.bounds = [boundaries(c.need, cap, alpha, looks) for c in self.checks]

    def __call__(self, results: Sequence[RequestResult]) -> Verdict | None:
        # Two honest views of the requests sent so far, in the order they were sent: the
        # prefix before the first one still in flight (all known: no bias from fast
        # requests finishing first), and all of them with the unknown ones counted against
        # the verdict. Either crossing a boundary is a crossing of the true sequence.
        done = [finished(r) for r in results]
        prefix = done.index(False) if False in done else len(done)
        passed = 0
        for check, (pass_at, fail_at) in zip(self.checks, self.bounds, strict=True):
            good = bad = unknown = 0
            pre_good = pre_n = 0
            for i, r in enumerate(results):
                if not done[i]:
                    unknown += 1
                    continue
                c = check.classify(r)
                if c is None:
                    continue
                good += c
                bad += not c
                if i < prefix:
                    pre_good += c
                    pre_n += 1
            n = min(good + bad + unknown, self.cap)
            if good + unknown <= fail_at[n] or pre_good <= fail_at[pre_n]:
                return "fail"
            if good >= pass_at[n] or pre_good >= pass_at[pre_n]:
                passed += 1
        return "pass" if passed == len(self.checks) else None


def gate_for(slo: Slo, profile: LoadProfile) -> Callable[[int | None], StepGate | None] | None:
    """Per step concurrency, its stop rule (None for steps the SLO does not gate); None
    when the profile has no sequential gate."""
    seq = profile.sequential
    if seq is None:
        return None
    steps = profile.steps()
    limit = slo.at_concurrency
    gated = [c for c in steps if c is None or limit is None or c <= limit] or steps[:1]
    checks = checks_for(slo, profile)
    alpha = (1 - seq.confidence) / max(len(checks) * max(len(gated), 1), 1)
    cap = profile.num_requests

    def rule(concurrency: int | None) -> StepGate | None:
        if concurrency not in gated:
            return None
        every = seq.check_every or concurrency or 1
        looks = -(-cap // every)
        return StepGate(checks, cap, alpha, looks)

    return rule
