import numpy as np

from tokenfleet.validation.calibrate import fit_rows, fitting_rows, log_errors, prior_efficiency
from tokenfleet.validation.cases import builtin_cases_path, read_cases


def _cases(*hardware: str):
    return [c for c in read_cases(builtin_cases_path()) if c.hardware in hardware]


def test_kinds_are_fitted_on_their_cost_model_rows_and_tpus_on_their_saturated_runs() -> None:
    rows = fitting_rows(_cases("mi300x", "tpu-v5e", "tpu-v6e", "tpu-v7"))
    assert {r.case.scenario for r in rows["amd"]} <= {"static", "per_user"}  # AMD's served rows stay out of sample
    assert {r.case.scenario for r in rows["tpu"]} == {"throughput"}
    assert "GT207" not in {r.case.id for r in rows["tpu"]}  # Qwen3.5 is not in the catalog: nothing to fit


def test_fitting_a_kind_brings_its_predictions_closer_to_the_measurements() -> None:
    rows = fitting_rows(_cases("tpu-v5e", "tpu-v6e", "tpu-v7"))["tpu"]
    prior, fitted = prior_efficiency(), fit_rows(rows)
    assert np.abs(log_errors(fitted, rows)).sum() < np.abs(log_errors(prior, rows)).sum()
    assert 0 < fitted.mem_eff <= 1 and 0 < fitted.compute_eff <= 1
