from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from paddock.ratings import (
    aggregate,
    bootstrap_intervals,
    bradley_terry,
    rank,
    repetition,
    thumbs_up_stats,
    wilson_interval,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------- Wilson


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 0) == (0.0, 0.0)
    lower, upper = wilson_interval(5, 10)
    assert lower == pytest.approx(0.2366, abs=1e-4) and upper == pytest.approx(0.7634, abs=1e-4)
    lower, upper = wilson_interval(0, 10)
    assert lower == 0.0 and upper == pytest.approx(0.2775, abs=1e-4)
    lower, upper = wilson_interval(10, 10)
    assert lower == pytest.approx(0.7225, abs=1e-4) and upper == 1.0
    # A wider z gives a wider interval; more data a narrower one.
    assert wilson_interval(5, 10, z=2.58)[0] < wilson_interval(5, 10)[0]
    assert wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0] < upper - lower


@pytest.mark.parametrize(("successes", "n"), [(11, 10), (-1, 10), (0, -1)])
def test_wilson_interval_rejects_impossible_counts(successes: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


# ---------------------------------------------------------------------------- thumbs up


def test_latest_vote_per_user_and_model_counts_once() -> None:
    votes = [
        ("u1", "m1", False, T0),
        ("u1", "m1", True, T0 + timedelta(minutes=5)),  # changed their mind
        ("u1", "m1", True, T0 + timedelta(minutes=6)),  # and said it again
        ("u2", "m1", False, T0),
        ("u3", "m1", True, T0),
        ("u1", "m2", False, T0),
    ]
    for order in (votes, list(reversed(votes))):
        stats = thumbs_up_stats(order)
        assert (stats["m1"].up, stats["m1"].n) == (2, 3)
        assert stats["m1"].ratio == pytest.approx(2 / 3)
        assert (stats["m1"].lower, stats["m1"].upper) == wilson_interval(2, 3)
        assert (stats["m2"].up, stats["m2"].n, stats["m2"].ratio) == (0, 1, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats["m1"].up = 5  # type: ignore[misc]


def test_on_equal_timestamps_the_vote_seen_last_wins() -> None:
    stats = thumbs_up_stats([("u", "m", False, T0), ("u", "m", True, T0)])
    assert stats["m"].up == 1


def test_thumbs_up_stats_at_scale_match_a_direct_count() -> None:
    rng = random.Random(5)
    votes = [
        (f"u{rng.randrange(300)}", f"m{rng.randrange(5)}", rng.random() < 0.6, T0 + timedelta(s))
        for s in range(5000)
    ]
    latest: dict[tuple[str, str], bool] = {}
    for user, model, up, _ in votes:  # already in time order
        latest[(user, model)] = up
    stats = thumbs_up_stats(votes)
    for model, s in stats.items():
        mine = [up for (_, m), up in latest.items() if m == model]
        assert (s.up, s.n) == (sum(mine), len(mine))
        assert s.lower <= s.ratio <= s.upper


# --------------------------------------------------------------------------- repetition


def test_repetition() -> None:
    assert repetition([]) == 0.0 and repetition(["hello there"]) == 0.0
    assert repetition(["Same words here", "same WORDS here!"]) == 1.0
    assert repetition(["a b c", "d e f"]) == 0.0
    assert repetition(["a b c", "b c d"]) == pytest.approx(0.5)
    # The mean over consecutive pairs: 1.0 then 0.0.
    assert repetition(["x y", "x y", "z"]) == pytest.approx(0.5)
    assert repetition(["", ""]) == 1.0


# ------------------------------------------------------------------------ Bradley-Terry


def simulate(
    elo: dict[str, float], battles: int, seed: int = 0, tie_rate: float = 0.0
) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    names = list(elo)
    rating = np.array([elo[n] for n in names])
    a = rng.integers(0, len(names), battles)
    b = rng.integers(0, len(names) - 1, battles)
    b = b + (b >= a)
    p_a = 1.0 / (1.0 + 10.0 ** ((rating[b] - rating[a]) / 400.0))
    winner = np.where(rng.random(battles) < p_a, "model_a", "model_b")
    winner = np.where(rng.random(battles) < tie_rate, "tie", winner)
    return list(zip([names[k] for k in a], [names[k] for k in b], winner.tolist(), strict=True))


TRUE = {f"m{k}": 800.0 + 80.0 * k for k in range(8)}  # mean 1080


def test_recovers_known_strengths() -> None:
    fitted = bradley_terry(simulate(TRUE, 40_000))
    assert list(fitted) == sorted(TRUE, key=TRUE.__getitem__, reverse=True)
    shift = 1000.0 - np.mean(list(TRUE.values()))  # the fit's mean is init_rating
    for model, rating in fitted.items():
        assert rating == pytest.approx(TRUE[model] + shift, abs=25.0), model
    assert np.mean(list(fitted.values())) == pytest.approx(1000.0, abs=1e-6)


def test_two_models_match_the_closed_form() -> None:
    # 600 wins out of 1000: the maximum-likelihood gap is 400 * log10(0.6 / 0.4).
    battles = [("a", "b", "model_a")] * 600 + [("a", "b", "model_b")] * 400
    fitted = bradley_terry(battles)
    gap = 400 * math.log10(0.6 / 0.4)
    assert fitted["a"] - fitted["b"] == pytest.approx(gap, abs=0.5)  # the prior pulls ~0.1
    unregularised = bradley_terry(battles, reg=0.0)
    assert unregularised["a"] - unregularised["b"] == pytest.approx(gap, abs=1e-3)


def test_elo_scale_parameters() -> None:
    battles = [("a", "b", "model_a")] * 750 + [("a", "b", "model_b")] * 250
    default = bradley_terry(battles, reg=0.0)
    assert default["a"] - default["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)
    natural = bradley_terry(battles, reg=0.0, scale=1.0, base=math.e, init_rating=0.0)
    assert natural["a"] - natural["b"] == pytest.approx(math.log(3), abs=1e-5)
    assert natural["a"] + natural["b"] == pytest.approx(0.0, abs=1e-6)


def test_ties_are_half_a_win_each_way() -> None:
    all_ties = bradley_terry([("a", "b", "tie")] * 50 + [("b", "c", "tie")] * 50)
    assert all(rating == pytest.approx(1000.0) for rating in all_ties.values())
    with_ties = [("a", "b", "model_a")] * 10 + [("a", "b", "tie")] * 10
    as_wins = [("a", "b", "model_a")] * 15 + [("a", "b", "model_b")] * 5
    bothbad = [("a", "b", "model_a")] * 10 + [("b", "a", "tie (bothbad)")] * 10
    fitted = bradley_terry(with_ties)
    assert fitted == pytest.approx(bradley_terry(as_wins), abs=1e-6)
    assert fitted == pytest.approx(bradley_terry(bothbad), abs=1e-6)


def test_a_model_that_only_wins_stays_finite() -> None:
    battles = simulate({k: v for k, v in list(TRUE.items())[:4]}, 2000, seed=3)
    battles += [("champion", f"m{k}", "model_a") for k in range(4)] * 10
    battles += [(f"m{k}", "champion", "model_b") for k in range(4)] * 5
    fitted = bradley_terry(battles)
    assert next(iter(fitted)) == "champion"
    assert all(math.isfinite(r) for r in fitted.values())
    assert fitted["champion"] < 3000
    intervals = bootstrap_intervals(battles, rounds=50)
    assert all(math.isfinite(r.upper) for r in intervals.values())


def test_order_and_sides_do_not_matter() -> None:
    battles = simulate(TRUE, 3000, seed=9, tie_rate=0.1)
    shuffled = battles[:]
    random.Random(1).shuffle(shuffled)
    flip = {"model_a": "model_b", "model_b": "model_a", "tie": "tie"}
    swapped = [(b, a, flip[w]) for a, b, w in battles]
    fitted = bradley_terry(battles)
    assert bradley_terry(shuffled) == pytest.approx(fitted, abs=1e-6)
    assert bradley_terry(swapped) == pytest.approx(fitted, abs=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown winner"):
        bradley_terry([("a", "b", "a")])
    assert bradley_terry([]) == {}
    assert bootstrap_intervals([], rounds=10) == {}
    with pytest.raises(ValueError, match="round"):
        bootstrap_intervals([("a", "b", "tie")], rounds=0)
    # A model battling itself carries no information.
    assert aggregate([("a", "a", "model_a"), ("a", "b", "tie")]).total == 1


def test_battles_per_model() -> None:
    pc = aggregate([("a", "b", "model_a"), ("b", "c", "tie"), ("c", "a", "model_b")] * 2)
    assert pc.battles_per_model() == {"a": 4, "b": 4, "c": 4}
    assert pc.total == 6


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_intervals_bracket_the_estimate_and_the_truth() -> None:
    battles = simulate(TRUE, 20_000, seed=4)
    point = bradley_terry(battles)
    intervals = bootstrap_intervals(battles, rounds=300, seed=1)
    assert list(intervals) == list(point)
    shift = 1000.0 - np.mean(list(TRUE.values()))
    covered = 0
    for model, ci in intervals.items():
        assert ci.rating == pytest.approx(point[model])
        assert ci.lower < ci.rating < ci.upper
        covered += ci.lower <= TRUE[model] + shift <= ci.upper
    assert covered >= 6  # 95 % intervals: missing more than 2 of 8 would be suspicious
    assert bootstrap_intervals(battles, rounds=300, seed=1) == intervals  # reproducible


def test_bootstrap_width_matches_the_binomial_standard_error() -> None:
    # Two models, p = 0.6 over n = 2000: sd(p) = sqrt(p(1-p)/n); the gap is
    # 400 log10(p/(1-p)), so sd(gap) = 400 / ln 10 / (p(1-p)) * sd(p), split evenly.
    n, p = 2000, 0.6
    battles = [("a", "b", "model_a")] * int(n * p) + [("a", "b", "model_b")] * int(n * (1 - p))
    sd_rating = 400 / math.log(10) / (p * (1 - p)) * math.sqrt(p * (1 - p) / n) / 2
    ci = bootstrap_intervals(battles, rounds=1000, seed=2)["a"]
    assert (ci.upper - ci.lower) / 2 == pytest.approx(1.96 * sd_rating, rel=0.15)


def test_more_battles_narrow_the_intervals() -> None:
    few = bootstrap_intervals(simulate(TRUE, 2_000, seed=5), rounds=200)
    many = bootstrap_intervals(simulate(TRUE, 32_000, seed=5), rounds=200)
    width = {k: v.upper - v.lower for k, v in few.items()}
    narrower = {k: v.upper - v.lower for k, v in many.items()}
    # Sixteen times the data: about a quarter of the width.
    assert np.mean(list(narrower.values())) == pytest.approx(
        np.mean(list(width.values())) / 4, rel=0.3
    )


# --------------------------------------------------------------------------------- rank


def test_rank_needs_a_minimum_count() -> None:
    scores = {"a": 1200.0, "b": 1100.0, "c": 1300.0, "d": 1100.0, "e": 900.0}
    counts = {"a": 50, "b": 20, "c": 19, "d": 40}
    assert rank(scores, counts, min_count=20) == {"a": 1, "b": 2, "c": None, "d": 2, "e": None}
    assert rank(scores, counts, min_count=0)["c"] == 1
    assert rank({}, {}) == {}
