"""The harm-budget calibrator on synthetic curves: known boundaries, the budget respected,
the number of evaluations, infeasible budgets, NaN, no-budget mode."""

import math

import pytest

from spectral_edit.experiments.calibrate import (
    Budget,
    Calibration,
    Probe,
    calibrate,
    log_grid,
)


class Curve:
    """``evaluate(α)`` of a synthetic method; counts its calls."""

    def __init__(self, harm, target=lambda a: a, name="control_points", more=None):
        self.harm, self.target, self.name, self.more = harm, target, name, more or {}
        self.calls: list[float] = []

    def __call__(self, alpha: float) -> Probe:
        self.calls.append(alpha)
        harms = {self.name: self.harm(alpha), **{k: f(alpha) for k, f in self.more.items()}}
        return Probe(self.target(alpha), harms)


def test_finds_the_known_boundary_of_a_quadratic_harm():
    """harm = 3α², budget 1 → α* = 1/√3, within the geometric bisection's resolution."""
    curve = Curve(lambda a: 3 * a * a)
    lo, hi, n = 0.01, 10.0, 12
    result = calibrate(curve, Budget(control_points=1.0), lo, hi, n)
    star = 1 / math.sqrt(3)
    a, b = result.bracket
    assert a <= star <= b
    assert b / a == pytest.approx((hi / lo) ** (1 / 2 ** (n - 2)), rel=1e-9)
    assert result.feasible and result.alpha == a  # target rises with α: the boundary
    assert abs(result.alpha - star) / star < b / a - 1 < 0.01
    assert result.best.harms["control_points"] <= 1.0
    assert result.mode == "bisection" and len(curve.calls) == n == result.used
    assert curve.calls[:2] == [lo, hi]  # bracket first
    assert curve.calls[2] == pytest.approx(math.sqrt(lo * hi))  # then geometric midpoints


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0, 7.5, 40.0])
def test_the_chosen_probe_is_never_above_the_budget(limit):
    """Even with a target that peaks inside the interval, the chosen probe is within the
    budget and is the best feasible probe by target."""
    curve = Curve(lambda a: 2 * a**1.5, target=lambda a: -((a - 2.0) ** 2))
    result = calibrate(curve, Budget(control_points=limit), 0.01, 10.0, 9)
    feasible = [p for p in result.probes if p.feasible]
    assert result.best.harms["control_points"] <= limit
    assert result.best.target == max(p.target for p in feasible)
    assert all(p.feasible == (p.harms["control_points"] <= limit) for p in result.probes)
    assert len(curve.calls) == 9


def test_two_harms_the_tighter_one_binds():
    """Control allows α ≤ 2, KL allows α ≤ 0.5: the boundary found is 0.5."""
    curve = Curve(lambda a: a / 2, more={"kl_nats": lambda a: a * a})
    result = calibrate(curve, Budget(control_points=1.0, kl_nats=0.25), 0.01, 10.0, 14)
    a, b = result.bracket
    assert a <= 0.5 <= b and b / a < 1.01
    assert result.best.harms["kl_nats"] <= 0.25


def test_exactly_the_evaluations_asked_for_in_every_mode():
    for n in (1, 2, 3, 7):
        bisect = Curve(lambda a: a)
        assert calibrate(bisect, Budget(control_points=1.0), 0.1, 10.0, n).used == n
        assert len(bisect.calls) == n
        wide = Curve(lambda a: 0.0)  # the whole interval is within budget
        result = calibrate(wide, Budget(control_points=1.0), 0.1, 10.0, n)
        assert len(wide.calls) == n == len(set(wide.calls))  # no α probed twice
        free = Curve(lambda a: a)
        assert calibrate(free, Budget(), 0.1, 10.0, n).used == n == len(free.calls)
    # the whole interval feasible: both ends, then a grid strictly inside, best target
    assert wide.calls[:2] == [0.1, 10.0] and all(0.1 < a < 10.0 for a in wide.calls[2:])
    assert result.alpha == 10.0 and result.bracket == (10.0, None)


def test_no_feasible_setting_when_lo_already_exceeds_the_budget():
    curve = Curve(lambda a: 5.0 + a)
    result = calibrate(curve, Budget(control_points=1.0), 0.1, 10.0, 8)
    assert not result.feasible and result.best is None and result.alpha is None
    assert result.used == 1 == len(curve.calls) and curve.calls == [0.1]
    assert result.evaluations == 8
    assert "no feasible setting" in result.reason and "control_points 5.1 > 1" in result.reason
    assert not result.probes[0].feasible


def test_nan_counts_as_infeasible():
    """A harm that turns NaN above α = 1 (a diverging model) bounds α like a large harm;
    a NaN target is infeasible too."""
    nan_above = Curve(lambda a: 0.0 if a <= 1.0 else math.nan)
    result = calibrate(nan_above, Budget(control_points=1.0), 0.01, 100.0, 16)
    a, b = result.bracket
    assert a <= 1.0 <= b and b / a < 1.001
    assert all(not p.feasible for p in result.probes if p.alpha > 1.0)
    assert "nan" in next(p.reason for p in result.probes if not p.feasible)

    bad_target = Curve(lambda a: 0.0, target=lambda a: math.nan if a > 0.5 else a)
    result = calibrate(bad_target, Budget(control_points=1.0), 0.1, 10.0, 6)
    assert result.feasible and result.alpha <= 0.5
    assert all(math.isfinite(p.target) for p in result.probes if p.feasible)

    all_nan = Curve(lambda a: 0.0, target=lambda a: math.nan)
    result = calibrate(all_nan, Budget(), 0.1, 10.0, 4)
    assert not result.feasible and result.best is None and result.used == 4
    assert result.reason


def test_no_budget_spends_a_log_spaced_grid_and_returns_the_best_target():
    curve = Curve(lambda a: 1e9, target=lambda a: -abs(math.log(a / 0.7)))
    result = calibrate(curve, Budget(), 0.01, 100.0, 5)
    assert curve.calls == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0])
    assert result.mode == "grid" and result.feasible  # harms are not limited
    assert result.alpha == pytest.approx(1.0)  # nearest to 0.7 on the grid
    # ties go to the smaller α
    flat = calibrate(Curve(lambda a: 0.0, target=lambda a: 3.0), Budget(), 0.5, 8.0, 5)
    assert flat.alpha == 0.5


def test_log_grid_and_arguments():
    assert log_grid(1.0, 16.0, 5) == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])
    assert log_grid(0.3, 3.0, 1) == [0.3]
    curve = Curve(lambda a: a)
    for lo, hi, n in ((0.0, 1.0, 3), (-1.0, 1.0, 3), (2.0, 1.0, 3), (0.1, 1.0, 0)):
        with pytest.raises(ValueError):
            calibrate(curve, Budget(), lo, hi, n)
    assert curve.calls == []
    with pytest.raises(KeyError, match="kl_nats"):  # a budgeted harm the probe lacks
        calibrate(curve, Budget(kl_nats=1.0), 0.1, 1.0, 2)
    with pytest.raises(ValueError, match="finite"):
        Budget(control_points=math.inf)


def test_budget_limits_extra_and_json_round_trip():
    budget = Budget(kl_nats=0.1).with_limit("stereotype_points", 0.0)
    assert budget.limits == {"kl_nats": 0.1, "stereotype_points": 0.0}
    assert Budget().empty and not budget.empty
    assert budget.with_limit("stereotype_points", 2.0).limits["stereotype_points"] == 2.0
    curve = Curve(lambda a: a, more={"stereotype_points": lambda a: a - 1.0, "kl_nats": abs})
    result = calibrate(curve, budget, 0.01, 1.0, 6)
    assert result.best.harms["kl_nats"] <= 0.1
    again = Calibration.from_json(result.to_json())
    assert again == result
