"""Software stacks fitted apart from their hardware kind (validation/data/stacks.yaml)."""

from __future__ import annotations

from tokenfleet.catalog import get_chip
from tokenfleet.validation.calibrate import fitting_rows, stack_rows
from tokenfleet.validation.cases import builtin_cases_path, read_cases
from tokenfleet.validation.stacks import stack_of, stacks


def _cases(*ids: str):
    return [c for c in read_cases(builtin_cases_path()) if c.id in ids]


def test_amds_mlperf_runs_and_argonnes_mi300x_sweep_are_stacks_of_their_own_and_nvidias_are_not() -> None:
    assert {s.name for s in stacks()} == {"mlperf", "llm-inference-bench"}
    ids = ("GT068", "GT064", "GT176", "GT143", "GT151", "GT011", "GT049", "GT162")
    of = {c.id: stack_of(c, get_chip(c.hardware).kind) for c in _cases(*ids)}
    assert of == {"GT068": "mlperf", "GT064": "mlperf", "GT176": "llm-inference-bench",
                  "GT143": "", "GT151": "", "GT011": "", "GT049": "", "GT162": ""}  # GT162: the same sweep on H100


def test_a_stacks_rows_stay_out_of_their_kinds_own_fit() -> None:
    """A stack is fitted on its static rows where it has them (Argonne's), else on its saturated
    runs (AMD's MLPerf Offline runs); neither set is the kind's."""
    cases = [c for c in read_cases(builtin_cases_path()) if c.hardware.startswith("mi")]
    by_stack = stack_rows(cases)
    kind_rows = {r.case.id for rows in fitting_rows(cases, apart=frozenset(by_stack)).values() for r in rows}
    assert {r.case.id for r in by_stack[("amd", "mlperf")]} == {"GT066", "GT068", "GT069", "GT070"}
    assert {r.case.id for r in by_stack[("amd", "llm-inference-bench")]} == {f"GT17{i}{e}" for i in (4, 5, 6, 7) for e in ("", "-e2e")}
    stack = {r.case.id for rows in by_stack.values() for r in rows}
    assert "GT151" in kind_rows and not kind_rows & stack


def test_a_rows_note_names_its_stacks_fit_only_when_that_fit_predicted_it() -> None:
    from tokenfleet.perf.efficiency import calibration_for
    from tokenfleet.validation.cases import Case, predict_case

    run = Case("T0", "meta-llama/Llama-3.1-8B", "mi300x", "1", "1", "", "", "fp8", "throughput", "", "500", "100",
               "none", "output_tok_s_total", 5000.0, "high", "test", notes="num_requests=100", software="MLPerf-like")
    assert "mlperf stack's own fit" in predict_case(run).reason
    given = calibration_for(get_chip("mi300x"), "").efficiency  # the kind's own, passed explicitly
    assert "stack" not in predict_case(run, {"amd": given}).reason
