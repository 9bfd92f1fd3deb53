import pytest

from tokenfleet.validation.cases import builtin_cases_path, predict_case, read_cases
from tokenfleet.validation.report import ValidationReport


def test_every_static_and_per_user_row_is_predicted_or_explained() -> None:
    for case in read_cases(builtin_cases_path()):
        if case.scenario in ("static", "per_user"):
            outcome = predict_case(case)
            assert outcome.predicted is not None or "speculative" in outcome.reason, (case.id, outcome.reason)


def test_claims_are_shown_but_not_counted() -> None:
    outcomes = [predict_case(c) for c in read_cases(builtin_cases_path())]
    table = ValidationReport.mape_table(outcomes)
    counted = sum(v["rows"] for k, v in table.items() if "/" not in k and ":" not in k)
    assert counted == sum(o.error is not None and o.case.trust != "claim" for o in outcomes)


def test_served_rows_go_through_the_simulator_or_say_why() -> None:
    """Throughput and server rows are simulated; the only unpredicted ones name their gap."""
    for case in read_cases(builtin_cases_path()):
        if case.scenario in ("throughput", "server"):
            outcome = predict_case(case)
            if outcome.predicted is None:
                assert any(w in outcome.reason for w in ("prompt length not published", "unknown model", "neither target_qps")), (case.id, outcome.reason)


def test_a_saturated_run_is_limited_by_the_engine_not_the_arrivals() -> None:
    """A throughput row's prediction is the simulator's output rate with every request at t=0."""
    from tokenfleet.validation.served import note_value, served_case

    sc = served_case("trtllm-bench, infinite request rate; num_requests=30000; max_num_seqs=512", "throughput", 128, 128)
    assert sc.requests == 4000 and sc.cfg.max_num_seqs == 512 and note_value("target_qps=73.5;", "target_qps") == 73.5
    case = next(c for c in read_cases(builtin_cases_path()) if c.id == "GT094")
    assert predict_case(case).predicted == pytest.approx(case.value, rel=0.5)
