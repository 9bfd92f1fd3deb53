import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.validation.cases import Case, Outcome
from tokenfleet.validation.floor import best_shared_prediction, error_floors


def _per_user(row_id: str, value: float, software: str = "", precision: str = "bf16") -> Case:
    return Case(row_id, "meta-llama/Llama-3.1-70B", "cerebras-wse3", "auto", "", "", "", precision, "per_user", "1", "", "",
                "unknown", "output_tok_s_per_user", value, "low", "vendor", software=software)


def _outcome(case: Case, deployment: str = "4 chips TP1 PP4 bf16", bound: float | None = 150_000.0) -> Outcome:
    return Outcome(case, "sram", 2000.0, deployment=deployment, bound=bound)


def test_two_figures_for_the_same_conditions_leave_the_spread_as_error() -> None:
    """Cerebras' Llama-3.1-70B at launch (450 tok/s) and two months later (2,148): no single
    prediction can be right for both; the least summed error predicts the smaller (a miss of the
    smaller costs more percent)."""
    launch, update = _per_user("A", 450.0, "launch"), _per_user("B", 2148.0, "update")
    floors = error_floors([_outcome(launch), _outcome(update)])
    assert floors == {"A": 0.0, "B": pytest.approx(1 - 450 / 2148)}


def test_rows_predicted_from_different_inputs_have_no_floor() -> None:
    one, other = _per_user("A", 450.0), _per_user("B", 2148.0)
    floors = error_floors([_outcome(one), _outcome(other, deployment="8 chips TP1 PP8 bf16")])
    assert floors == {"A": 0.0, "B": 0.0}


def test_a_figure_beyond_the_roofline_is_missed_by_at_least_its_excess() -> None:
    """A physical model predicts at most the bound: 129 tok/s measured where 31.7 is the limit."""
    floors = error_floors([_outcome(_per_user("A", 129.0), bound=31.7)])
    assert floors["A"] == pytest.approx(1 - 31.7 / 129.0)


def test_a_time_below_its_bound_counts_too() -> None:
    assert best_shared_prediction([0.5], "e2e_s", 1.0) == 1.0
    assert best_shared_prediction([1.5, 2.0], "e2e_s", 1.0) == 1.5


def test_claims_and_unpredicted_rows_have_no_floor() -> None:
    claim = dataclasses.replace(_per_user("C", 5000.0), trust="claim")
    unpredicted = Outcome(_per_user("U", 10.0), "sram", None, "unknown model")
    assert error_floors([_outcome(claim), unpredicted]) == {}


@given(st.lists(st.floats(1.0, 1e6), min_size=1, max_size=8), st.floats(1.0, 1e6))
def test_no_prediction_within_physics_beats_the_floor(measured: list[float], probe: float) -> None:
    """The floor is a minimum: any other physical prediction (at most the bound) errs at least as much."""
    bound = max(measured) * 0.8
    best = best_shared_prediction(measured, "output_tok_s_total", bound)
    assert best <= bound

    def summed(p: float) -> float:
        return sum(abs(p - m) / m for m in measured)

    assert summed(best) <= summed(min(probe, bound)) + 1e-9
