from dataclasses import replace

import numpy as np
import pytest

from tokenfleet.catalog.chips import get_chip
from tokenfleet.perf.efficiency import calibration_for
from tokenfleet.validation import calibrate
from tokenfleet.validation.calibrate import (
    MIN_SATURATED_ROWS,
    fit_rows,
    fit_saturated,
    fitting_rows,
    log_errors,
    prior_efficiency,
    runs_format,
    saturated_params,
    saturated_rows,
)
from tokenfleet.validation.cases import builtin_cases_path, read_cases


def _cases(*hardware: str):
    return [c for c in read_cases(builtin_cases_path()) if c.hardware in hardware]


def test_kinds_are_fitted_on_their_cost_model_rows_and_tpus_on_their_saturated_runs() -> None:
    rows = fitting_rows(_cases("mi300x", "tpu-v5e", "tpu-v6e", "tpu-v7"))
    assert {r.case.scenario for r in rows["amd"]} <= {"static", "per_user"}  # AMD's served rows stay out of sample
    assert {r.case.scenario for r in rows["tpu"]} == {"throughput"}
    assert "GT207" in {r.case.id for r in rows["tpu"]}  # Qwen3.5 (Gated DeltaNet hybrid) is predicted, so fitted


def test_fitting_a_kind_brings_its_predictions_closer_to_the_measurements() -> None:
    rows = fitting_rows(_cases("tpu-v5e", "tpu-v6e", "tpu-v7"))["tpu"]
    prior, fitted = prior_efficiency(), fit_rows(rows)
    assert np.abs(log_errors(fitted, rows)).sum() < np.abs(log_errors(prior, rows)).sum()
    assert 0 < fitted.mem_eff <= 1 and 0 < fitted.compute_eff <= 1


def test_gpus_hold_the_measured_overlap_of_compute_and_memory_and_other_kinds_the_ideal_roofline() -> None:
    """`overlap` is not fitted: GPU kinds hold the value measured on GEMM sweeps (HELD), whatever
    their rows; a kind without a measurement keeps the ideal roofline's 1."""
    from tokenfleet.validation.calibrate import HELD

    rows = fitting_rows(_cases("mi300x", "h100-sxm", "sambanova-sn40l"))
    assert 0 < HELD["nvidia"]["overlap"] < 1 and 0 < HELD["amd"]["overlap"] < 1
    assert fit_rows(rows["nvidia"]).overlap == HELD["nvidia"]["overlap"]
    assert fit_rows(rows["amd"]).overlap == HELD["amd"]["overlap"]
    assert fit_rows(rows["sambanova-sn40l"]).overlap == 1.0
    for chip in ("h200-sxm", "mi325x", "tpu-v7", "groq-lpu"):  # and so does the shipped fit
        spec = get_chip(chip)
        assert calibration_for(spec).efficiency.overlap == HELD.get(spec.family, {}).get("overlap", 1.0), chip


def test_a_kinds_link_latency_is_fitted_where_its_rows_span_several_chips_and_held_where_none_do(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The catalog's link latencies are mostly estimates; a kind's rows on several chips at small
    batches (SambaNova's: TP8 and TP16 at batch 1-16) say what each collective step really costs,
    while rows on one chip say nothing and leave the catalog's value."""
    rows = fitting_rows(_cases("sambanova-sn40l", "h100-sxm"))
    sn40l = rows["sambanova-sn40l"]
    fitted = fit_rows(sn40l)
    i = calibrate.PARAMS.index("link_latency_factor")
    monkeypatch.setattr(calibrate, "LOWER", np.where(np.arange(len(calibrate.PARAMS)) == i, 1.0, calibrate.LOWER))
    monkeypatch.setattr(calibrate, "UPPER", np.where(np.arange(len(calibrate.PARAMS)) == i, 1.0 + 1e-9, calibrate.UPPER))
    at_catalog = fit_rows(sn40l)  # everything else refitted, the latency held at the catalog's
    assert fitted.link_latency_factor < 0.5 and at_catalog.link_latency_factor == pytest.approx(1.0)
    assert np.abs(log_errors(fitted, sn40l)).mean() < np.abs(log_errors(at_catalog, sn40l)).mean()
    monkeypatch.undo()
    one_chip = [r for r in rows["nvidia"] if r.deployment.chips == 1]
    assert len(one_chip) >= 5 and fit_rows(one_chip).link_latency_factor == pytest.approx(1.0)


def test_the_saturated_step_fits_what_single_chip_fp4_runs_inform_and_brings_them_closer() -> None:
    """On one-chip FP4 runs only the FP4 factor is informed: it is fitted, the runs come closer and
    nothing else moves; on too few runs nothing is fitted."""
    cases = _cases("b200", "gb200", "h100-sxm")
    base_rows = fitting_rows(cases)["nvidia"]
    rows = [r for r in saturated_rows(cases, {"nvidia": base_rows})["nvidia"] if runs_format(r, "fp4") and r.case.num_chips == "1"]
    assert {r.case.scenario for r in rows} == {"throughput"} and saturated_params(rows, base_rows) == ["fp4_compute_factor"]
    base = replace(calibration_for(rows[0].chip).efficiency, fp4_compute_factor=1.0)
    fitted = fit_saturated(base, rows, base_rows)
    assert np.abs(log_errors(fitted, rows)).sum() < np.abs(log_errors(base, rows)).sum()
    assert replace(fitted, fp4_compute_factor=1.0) == base  # nothing else moves
    assert fitted.fp4_compute_factor >= 0.3 and fitted.fp4_compute_factor * fitted.compute_eff <= 0.95
    assert fit_saturated(base, rows[: MIN_SATURATED_ROWS - 1], base_rows) == base  # too few rows: left as it was


def test_the_saturated_step_fits_fp8_only_where_the_cost_model_rows_could_not_see_it() -> None:
    """NVIDIA's cost-model rows are mostly 16-bit, so its FP8 runs fit an FP8 factor; AMD's are
    mostly FP8 already (its compute_eff is FP8's), so its FP8 runs fit only the link share; the
    TPUs, fitted on their saturated runs, have none left over."""
    from tokenfleet.validation.calibrate import _FitInputs

    fit = _FitInputs.of(_cases("h100-sxm", "h200-sxm", "b200", "gb200", "mi300x", "tpu-v5e", "tpu-v6e", "tpu-v7"))
    assert saturated_params(fit.saturated["nvidia"], fit.base["nvidia"]) == ["fp4_compute_factor", "fp8_compute_factor", "comm_eff"]
    assert saturated_params(fit.saturated["amd"], fit.base["amd"]) == ["comm_eff"]
    assert "tpu" not in fit.saturated


def test_a_stacks_compute_efficiency_is_fitted_on_its_saturated_runs_and_nothing_else_moves() -> None:
    """Three MI300X runs 'measured' at twice what the AMD fit predicts: the stack's compute
    efficiency rises and brings them closer; with too few rows it stays the kind's."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf.auto import layout
    from tokenfleet.perf.predict import Workload
    from tokenfleet.validation.calibrate import MIN_STACK_ROWS, fit_stack
    from tokenfleet.validation.cases import Case, PreparedCase

    model, chip = get_model("llama-3.1-8b"), get_chip("mi300x")
    base = calibration_for(chip, "").efficiency
    rows = []
    for i, (prompt, answer) in enumerate(((1000, 100), (500, 500), (2000, 200))):
        case = Case(f"T{i}", "meta-llama/Llama-3.1-8B", "mi300x", "1", "1", "", "", "fp8", "throughput", "", str(prompt), str(answer),
                    "none", "output_tok_s_total", 1.0, "high", "test", notes="num_requests=300", software="MLPerf-like")
        dep = layout(model, chip, 1, weight_precision="fp8", kv_precision="fp8")
        row = PreparedCase(case, model, chip, dep, Workload(1, prompt, answer), stack="mlperf")
        rows.append(replace(row, case=replace(case, value=2 * row.predict(base))))
    fitted = fit_stack(base, rows)
    assert fitted.compute_eff > 1.3 * base.compute_eff and replace(fitted, compute_eff=base.compute_eff) == base
    assert np.abs(log_errors(fitted, rows)).sum() < 0.7 * np.abs(log_errors(base, rows)).sum()
    assert fit_stack(base, rows[: MIN_STACK_ROWS - 1]) == base


def test_a_stack_with_static_rows_gets_its_own_compute_efficiency_fitted_jointly_with_its_kind() -> None:
    """Four batched MI300X runs 'measured' as the AMD kind's own fit would predict them with matmuls
    at 4% of peak (as Argonne's 2024 sweep ran): the joint fit finds that efficiency for their stack,
    far below where a local search from the kind's value would stop, and the kind's own fit stays."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf.auto import layout
    from tokenfleet.perf.predict import Workload
    from tokenfleet.validation.calibrate import counted_rows, fit_jointly
    from tokenfleet.validation.cases import Case, PreparedCase

    own = [r for r in counted_rows(_cases("mi300x"))["amd"] if not r.stack]
    alone = fit_rows(own)
    model, chip = get_model("llama-3-8b"), get_chip("mi300x")
    slow = replace(alone, compute_eff=0.04)
    rows = []
    for i, (batch, length) in enumerate(((16, 1024), (64, 512), (128, 128), (1, 1024))):
        case = Case(f"T{i}", "meta-llama/Meta-Llama-3-8B", "mi300x", "1", "1", "", "", "fp16", "static", str(batch), str(length),
                    str(length), "none", "e2e_s", 1.0, "high", "test")
        row = PreparedCase(case, model, chip, layout(model, chip, 1, weight_precision="bf16"), Workload(batch, length, length), "s")
        rows.append(replace(row, case=replace(case, value=row.predict(slow))))
    kind, stacks = fit_jointly(own, {"s": rows, "too-few": rows[:2]})
    assert set(stacks) == {"s"} and abs(stacks["s"].compute_eff / 0.04 - 1) < 0.2  # the pull towards the kind: ~10%
    assert replace(stacks["s"], compute_eff=kind.compute_eff) == kind
    np.testing.assert_allclose(log_errors(kind, own), log_errors(alone, own), atol=0.02)


def test_a_stack_with_too_few_runs_is_not_fitted_apart_and_its_rows_stay_its_kinds() -> None:
    """Two MLPerf MI300X runs and nothing else: too few for a stack of their own, so AMD is fitted
    on them (a kind without static rows is fitted on its saturated runs) and says why no stack."""
    from tokenfleet.validation.calibrate import MIN_STACK_ROWS, calibrate
    from tokenfleet.validation.cases import Case

    runs = [Case(f"T{i}", "meta-llama/Llama-3.1-8B", "mi300x", "1", "1", "", "", "fp8", "throughput", "", str(prompt), str(answer),
                 "none", "output_tok_s_total", tok_s, "high", "test", notes="num_requests=200", software="MLPerf-like")
            for i, (prompt, answer, tok_s) in enumerate(((1000, 100, 2000.0), (500, 500, 6000.0)))]
    assert len(runs) < MIN_STACK_ROWS
    fits = calibrate(runs)
    assert fits["amd"].rows == ("T0", "T1")
    assert fits["amd"].stacks == () and fits["amd"].stacks_too_small == (("mlperf", 2),)


def test_leaving_one_source_out_predicts_its_rows_with_a_fit_that_never_saw_them_on_any_number_of_processes() -> None:
    from tokenfleet.validation.calibrate import leave_one_source_out

    cases = [c for c in read_cases(builtin_cases_path()) if c.id in ("GT131", "GT132", "GT135", "GT162", "GT164", "GT166")]
    rows = fitting_rows(cases)["nvidia"]
    held_out = leave_one_source_out(cases)
    assert sorted(o.case.id for o in held_out) == sorted(r.case.id for r in rows)
    for outcome in held_out:
        others = [r for r in rows if r.case.source != outcome.case.source]
        row = next(r for r in rows if r.case.id == outcome.case.id)
        assert outcome.predicted == row.predict(fit_rows(others))
    assert [o.predicted for o in leave_one_source_out(cases, workers=2)] == [o.predicted for o in held_out]


def test_kinds_are_fitted_alike_on_one_process_or_several_and_the_loop_shows_progress() -> None:
    from tokenfleet.validation.calibrate import calibrate

    cases = [c for c in read_cases(builtin_cases_path()) if c.id in ("GT162", "GT164", "GT166", "GT174", "GT175", "GT177")]
    seen: list[tuple[str, int]] = []

    def track(items, description):  # type: ignore[no-untyped-def]
        seen.append((description, len(items)))
        return items

    one = calibrate(cases, track)
    assert sorted(one) == ["amd", "nvidia"] and seen == [("fitting kinds", 2)]
    assert calibrate(cases, workers=2) == one


def test_a_kind_fitted_through_the_simulator_starts_from_a_grid_so_a_stepped_response_does_not_stall_it() -> None:
    """Saturated runs whose throughput moves in whole steps of memory efficiency (as a simulated
    run's does, in whole requests and batches): a local search from the prior sees no slope, the
    grid's best point does, and the fit lands on the step that matches."""
    from types import SimpleNamespace

    class SteppedRun:
        def __init__(self, tok_s_per_step: float, measured: float) -> None:
            self.tok_s_per_step = tok_s_per_step
            self.case = SimpleNamespace(scenario="throughput", value=measured, id="T")
            self.chip = SimpleNamespace(family="tpu")

        def predict(self, eff) -> float:
            return self.tok_s_per_step * np.floor(eff.mem_eff * 20)

    runs = [SteppedRun(tok_s, 7 * tok_s) for tok_s in (100.0, 300.0, 900.0)]  # measured: mem_eff in [0.35, 0.40)
    assert np.abs(log_errors(prior_efficiency(), runs)).max() > 0.7  # the prior (0.75) is on another step
    fitted = fit_rows(runs)
    assert 0.35 <= fitted.mem_eff < 0.40
    np.testing.assert_allclose(log_errors(fitted, runs), 0.0)
