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
    counted = sum(v["rows"] for k, v in table.items() if "/" not in k)
    assert counted == sum(o.error is not None and o.case.trust != "claim" for o in outcomes)
