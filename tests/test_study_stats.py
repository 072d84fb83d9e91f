"""The study's statistics: pairing by seed, the 95% t-interval, the t table, and the verdict rule."""

from __future__ import annotations

import math

import pytest

from switchbert.study.report import collect, comparisons
from switchbert.study.runner import Record
from switchbert.study.grid import QUICK as QUICK_GRID
from switchbert.study.stats import BEATS, NO_DIFFERENCE, T975, TRAILS, paired, t975


def _t_cdf_minus_half(x: float, df: int, n: int = 4000) -> float:
    """P(0 < T < x) for Student's t, by Simpson's rule on the density (float64)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731
    h = x / n
    s = f(0.0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    return s * h / 3


@pytest.mark.parametrize("df", sorted(T975))
def test_t_table_matches_a_numerical_integration(df):
    # P(T < q) = 0.975 at the table's quantile; 1e-8 in probability is < 1e-6 relative in q for every df here
    assert abs(_t_cdf_minus_half(T975[df], df) - 0.475) < 1e-8


def test_t_quantile_above_the_table_is_close_and_decreasing():
    assert t975(31) < T975[30] and t975(40) == pytest.approx(2.021075390, rel=1e-4)
    assert t975(1000) == pytest.approx(1.962339, rel=1e-4)
    with pytest.raises(ValueError):
        t975(0)


def test_hand_computed_interval():
    # diffs 1, 2, 3: mean 2, sample std 1, half-width t(2) / sqrt(3) = 4.302652730 / 1.7320508 = 2.484138
    c = paired({0: 11.0, 1: 22.0, 2: 33.0}, {0: 10.0, 1: 20.0, 2: 30.0})
    assert c.diffs == (1.0, 2.0, 3.0) and c.mean == pytest.approx(2.0)
    assert c.half_width == pytest.approx(2.484138, abs=1e-6)
    assert c.interval == pytest.approx((-0.484138, 4.484138), abs=1e-6)
    assert c.verdict == NO_DIFFERENCE


def test_verdict_only_where_the_interval_excludes_zero():
    assert paired({0: 3.0, 1: 4.0, 2: 5.0}, {0: 0.0, 1: 0.0, 2: 0.0}).verdict == BEATS  # [1.52, 6.48]
    assert paired({0: -3.0, 1: -4.0, 2: -5.0}, {0: 0.0, 1: 0.0, 2: 0.0}).verdict == TRAILS
    assert paired({0: 5.0, 1: -5.0, 2: 1.0}, {0: 0.0, 1: 0.0, 2: 0.0}).verdict == NO_DIFFERENCE
    # one seed in common: no interval, so no verdict however large the gap
    one = paired({0: 50.0}, {0: 0.0})
    assert one.interval is None and one.verdict == NO_DIFFERENCE and one.to_markdown() == "+50.0 (1 seed)"
    assert paired({}, {0: 1.0}).mean is None


def test_pairing_is_by_seed_and_a_missing_seed_leaves_both():
    # UNITER lacks seed 2, Switch-BERT lacks seed 3: only seeds 0 and 1 are compared, each with its own pair
    c = paired({0: 10.0, 1: 30.0, 2: 99.0}, {0: 9.0, 1: 27.0, 3: -99.0})
    assert c.seeds == (0, 1) and c.diffs == (1.0, 3.0)


def test_a_run_without_a_value_is_excluded_from_the_comparison():
    from switchbert.study.grid import QUICK

    rec = lambda model, seed, value: Record(model, "a0-c0", 0.0, "short", seed, "refexp", value)  # noqa: E731
    records = [rec("UNITER", 0, 50.0), rec("UNITER", 1, 60.0), rec("UNITER", 2, None),
               rec("Switch-BERT", 0, 52.0), rec("Switch-BERT", 1, 61.0), rec("Switch-BERT", 2, 99.0)]
    values = collect(records)
    assert values[("UNITER", "a0-c0", "short", "refexp")] == {0: 50.0, 1: 60.0}
    comp = comparisons(QUICK, values)[("Switch-BERT", "a0-c0", "short", "refexp")]
    assert comp.seeds == (0, 1) and comp.diffs == (2.0, 1.0)


def test_the_trend_is_the_paired_change_of_the_gain_between_levels():
    from dataclasses import replace

    from switchbert.study.grid import Level
    from switchbert.study.report import trend_table

    grid = replace(QUICK_GRID, models=("UNITER", "Switch-BERT"), tasks=("refexp",))
    lo, hi = grid.levels[0].name, grid.levels[-1].name
    values = {("UNITER", lo, "short", "refexp"): {0: 50.0, 1: 50.0, 2: 50.0},
              ("Switch-BERT", lo, "short", "refexp"): {0: 50.0, 1: 51.0, 2: 49.0},  # gains 0, +1, -1
              ("UNITER", hi, "short", "refexp"): {0: 40.0, 1: 40.0, 2: 40.0},
              ("Switch-BERT", hi, "short", "refexp"): {0: 45.0, 1: 47.0, 2: 44.0}}  # gains 5, 7, 4
    row = trend_table(grid, values).splitlines()[-1]
    # per seed 5, 6, 5: mean 5.33, std 0.577, half-width 4.3027 * 0.577 / sqrt(3) = 1.434
    assert "+5.3 [+3.9, +6.8] **grows**" in row
    assert "no trend" in trend_table(replace(grid, levels=(Level(0.0, 0.0),)), values)
