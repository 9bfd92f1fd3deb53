"""Fit the few efficiency parameters of each hardware kind on published measurements.

One parameter set per kind (see `ChipSpec.kind`; never per row or per model): achieved memory
bandwidth and compute fractions, three fixed overheads and the share of the catalog's link
latency each collective step and pipeline hop pays. A kind is fitted on its `static` and
`per_user` rows through the cost model; a kind with none (the TPUs: every published TPU figure is
a saturated run) on its `throughput` rows through the serving simulator. The fit minimises a robust (soft-L1)
loss on log errors, so one odd vendor figure cannot pull a kind, plus a weak pull towards
generic GPU-like values so that parameters the rows do not constrain stay physical.

A second step fits, on the kind's saturated runs (through the simulator, the base parameters
held), what its cost-model rows cannot see (`fit_saturated`): the share of `compute_eff` that FP4
and FP8 matmuls reach (`fp4_compute_factor`, `fp8_compute_factor`) and the share of link bandwidth
that collectives reach (`comm_eff`), each only where enough runs inform it. NVIDIA's cost-model
rows are nearly all 16-bit, single-chip or latency-bound and memory-bound; its saturated runs are
FP4 and FP8 and run compute-bound on up to eight chips, where collectives carry gigabytes a step.
The software stacks named in `data/stacks.yaml` (see `validation.stacks`) each get a
`compute_eff` of their own on the kinds they name, the kind's other parameters shared; their rows
stay out of the kind's own rows. A stack is fitted the way a kind is: on its `static` and
`per_user` rows, through the cost model, jointly with its kind's parameters (those rows say about
per-step costs what any of the kind's rows say); a stack with none, on its saturated runs, through
the simulator, after the kind's fit and with its parameters held (the simulator is too slow to sit
inside the kind's fit).
`leave_one_source_out` refits without each source in turn and predicts that source's rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.precision import COMPUTE_FORMAT
from tokenfleet.perf.step import Efficiency
from tokenfleet.validation.cases import (
    COST_MODEL_SCENARIOS,
    Case,
    Outcome,
    PreparedCase,
    Track,
    prepare_case,
)
from tokenfleet.validation.parallel import in_order, worker_count

PARAMS = ("mem_eff", "compute_eff", "layer_overhead_s", "moe_layer_overhead_s", "step_overhead_s", "link_latency_factor")
LOWER = np.array([0.30, 0.15, 0.0, 0.0, 0.0, 0.0])
UPPER = np.array([1.00, 0.95, 300e-6, 300e-6, 30e-3, 10.0])
SCALE = np.array([0.1, 0.1, 10e-6, 10e-6, 1e-3, 0.3])
#: The prior: generic values and how far a fit may stray from them at the cost of one unit of
#: log error (0.75 bandwidth, 0.5 compute, 10 us per layer, 10 us per MoE layer, 2 ms per step,
#: the catalog's link latency; most catalog latencies are estimates, so a kind's rows may move it
#: anywhere from free links, 0, to ten times the estimate).
PRIOR = np.array([0.75, 0.5, 10e-6, 10e-6, 2e-3, 1.0])
PRIOR_WIDTH = np.array([0.5, 0.5, 100e-6, 100e-6, 10e-3, 2.0])
#: The robust loss (soft L1) treats log errors beyond ~0.2 (a fifth) as outliers.
F_SCALE = 0.2
#: The saturated step's parameters: (lower, upper, prior). Each is fitted only where at least
#: MIN_SATURATED_ROWS of the kind's saturated runs inform it, with a weak pull towards its prior of
#: the same strength as above: narrow formats as efficient as 16-bit ones; GPU collectives at 80%
#: of link bandwidth (NCCL's all-reduce bus bandwidth reaches ~70-90% of NVLink's for large
#: messages, less for small ones). Where no runs inform one it keeps its default, 1: a format as
#: efficient as 16-bit, links at their datasheet bandwidth (TPU and SRAM transfers are scheduled
#: by their compilers, and no published run says otherwise).
SATURATED_PARAMS = {
    "fp4_compute_factor": (0.3, 1.5, 1.0),
    "fp8_compute_factor": (0.3, 1.5, 1.0),
    "comm_eff": (0.1, 1.0, 0.8),
}
MIN_SATURATED_ROWS = 4
SATURATED_PRIOR_WIDTH = 0.5
#: A stack's compute efficiency is fitted only on at least this many of its rows, with a weak pull
#: towards its kind's value (one unit of log error per factor of four). It may sit far below the
#: kind's lower bound: Argonne's 2024 MI300X sweep ran its matmuls at ~3-4% of peak.
MIN_STACK_ROWS = 3
STACK_PRIOR_WIDTH = 2.0
STACK_COMPUTE_LOWER = 0.01
#: Parameters held, not fitted, per family. `overlap`: the share of an operator's shorter roofline
#: leg hidden under its longer one (`perf.step._roof`). A fit cannot pin it: the static and
#: per_user rows sit far from the ridge point (batch-1 decode, long prefills): fitted freely (from
#: 0.5 or from 1) it ends at 0.94-1.0, yet held at 0.5 they score no worse (NVIDIA 9.9% against
#: 10.3%). On GPUs it is measured instead:
#: an H100 FP8 GEMM sweep (inference-sim/inference-sim bench_data/gemm/h100/data.csv @9da9978,
#: M = 8-32768 over eight LLM weight shapes, K 2048-8192, N 6144-11008), with each leg at its
#: achieved rate (the large-M plateau, 1.24-1.29 PFLOP/s; the small-M weight read, 1.4-2.1
#: TB/s), fits an overlap of 0.79-0.88 per shape (0.83 on average; 0.5-0.7 at the ridge itself).
#: AMD's GPUs are assumed alike (no sweep found). TPUs and SRAM chips, whose compilers schedule
#: transfers and with no published sweep, keep the ideal roofline, 1.
HELD = {"nvidia": {"overlap": 0.8}, "amd": {"overlap": 0.8}}
#: Points per axis of `_grid_start`'s grid (log-spaced between the bounds).
GRID_POINTS = 6
#: least_squares settings for a fit through the simulator: steps wide enough to cross the plateaus
#: of a simulated run's throughput (whole requests, whole batches), and a coarse stopping tolerance.
THROUGH_SIMULATOR = {"diff_step": 0.01, "xtol": 1e-3}


@dataclass(frozen=True)
class StackFit:
    """One software stack's fit on one kind: the kind's parameters with its own compute efficiency."""

    stack: str
    efficiency: Efficiency
    rows: tuple[str, ...]
    band_log: float
    mape: float


@dataclass(frozen=True)
class KindFit:
    kind: str
    family: str
    efficiency: Efficiency
    rows: tuple[str, ...]
    band_log: float
    mape: float
    saturated_rows: tuple[str, ...] = ()
    stacks: tuple[StackFit, ...] = ()
    stacks_too_small: tuple[tuple[str, int], ...] = ()  # (stack, rows): not fitted apart (too few rows, or none of the kind's own)


def _vector_to_eff(x: np.ndarray, held: dict[str, float] | None = None) -> Efficiency:
    return Efficiency(**(held or {}), **{name: float(v) for name, v in zip(PARAMS, x, strict=True)})


def held_for(rows: list[PreparedCase]) -> dict[str, float]:
    """The parameters held for the family of `rows` (all of one kind) (HELD)."""
    return HELD.get(rows[0].chip.family, {}) if rows else {}


def prior_efficiency() -> Efficiency:
    """Where every fit starts: generic GPU-like values (PRIOR)."""
    return _vector_to_eff(PRIOR)


def log_errors(eff: Efficiency, rows: list[PreparedCase]) -> np.ndarray:
    return np.array([np.log(max(r.predict(eff), 1e-12) / r.case.value) for r in rows])


def _residuals(x: np.ndarray, rows: list[PreparedCase]) -> np.ndarray:
    return np.concatenate([log_errors(_vector_to_eff(x, held_for(rows)), rows), (x - PRIOR) / PRIOR_WIDTH])


def fit_rows(rows: list[PreparedCase]) -> Efficiency:
    """Robust least-squares fit of one kind's parameters on its prepared rows. Rows replayed
    through the simulator start from the best point of a coarse grid (`_grid_start`) and take
    coarse steps."""
    if not rows:
        return prior_efficiency()
    if through_cost_model(rows):
        start, steps = PRIOR, {}
    else:
        start, steps = _grid_start(rows), THROUGH_SIMULATOR
    fit = least_squares(_residuals, start, args=(rows,), bounds=(LOWER, UPPER), x_scale=SCALE, loss="soft_l1", f_scale=F_SCALE, **steps)
    return _vector_to_eff(fit.x, held_for(rows))


def _soft_l1(residuals: np.ndarray) -> float:
    """least_squares' soft-L1 cost of `residuals` (at F_SCALE)."""
    return float(np.sum(np.sqrt(1 + (residuals / F_SCALE) ** 2)))


def _grid_start(rows: list[PreparedCase]) -> np.ndarray:
    """Where a fit through the simulator starts: the best of a log grid over memory and compute
    efficiency, the other parameters at the prior. A local search from the prior stalls: a
    simulated run's throughput moves in steps (whole requests, whole batches) that a small
    parameter change does not cross, and on TPU it stopped at a point 40% worse than the grid's best."""
    grid = [np.append([mem, compute], PRIOR[2:]) for mem in np.geomspace(LOWER[0], UPPER[0], GRID_POINTS)
            for compute in np.geomspace(LOWER[1], UPPER[1], GRID_POINTS)]
    return min(grid, key=lambda x: _soft_l1(_residuals(x, rows)))


def fit_jointly(rows: list[PreparedCase], stacks: dict[str, list[PreparedCase]]) -> tuple[Efficiency, dict[str, Efficiency]]:
    """One kind's parameters fitted on its own `rows` together with the `stacks`' rows, each stack
    with a compute efficiency of its own, pulled towards the kind's own fit (`fit_rows`) as in
    `fit_stack`. Stacks with too few rows are left out, and so are those fitted through the
    simulator (`through_cost_model`: `fit_stack` fits them after). Returns the kind's fit and each
    jointly fitted stack's."""
    alone = fit_rows(rows)
    stacks = {name: srows for name, srows in sorted(stacks.items()) if len(srows) >= MIN_STACK_ROWS and through_cost_model(srows)}
    if not stacks:
        return alone, {}

    held = held_for(rows or [r for srows in stacks.values() for r in srows])

    def fits(x: np.ndarray) -> tuple[Efficiency, list[Efficiency]]:
        eff = _vector_to_eff(x[: len(PARAMS)], held)
        return eff, [replace(eff, compute_eff=float(c)) for c in x[len(PARAMS):]]

    def residuals(x: np.ndarray) -> np.ndarray:
        eff, stack_effs = fits(x)
        stack_prior = np.log(x[len(PARAMS):] / alone.compute_eff) / np.log(2) / STACK_PRIOR_WIDTH
        return np.concatenate([log_errors(eff, rows), *(log_errors(se, srows) for se, srows in zip(stack_effs, stacks.values(), strict=True)),
                               (x[: len(PARAMS)] - PRIOR) / PRIOR_WIDTH, stack_prior])

    n = len(stacks)
    start = np.append([getattr(alone, name) for name in PARAMS], [_stack_start(alone, srows) for srows in stacks.values()])
    lower, upper = np.append(LOWER, [STACK_COMPUTE_LOWER] * n), np.append(UPPER, [UPPER[1]] * n)
    fit = least_squares(residuals, np.clip(start, lower, upper), bounds=(lower, upper), x_scale=np.append(SCALE, [SCALE[1]] * n),
                        loss="soft_l1", f_scale=F_SCALE)
    eff, stack_effs = fits(fit.x)
    return eff, dict(zip(stacks, stack_effs, strict=True))


def _stack_start(kind: Efficiency, rows: list[PreparedCase]) -> float:
    """Where a stack's compute efficiency starts in the joint fit: the best of a log-spaced grid with
    the kind's other parameters. A local search cannot find a low efficiency from a high one: while
    compute is not what bounds a row, the rows do not move with it."""
    grid = np.geomspace(STACK_COMPUTE_LOWER, UPPER[1], 24)
    return float(min(grid, key=lambda c: _soft_l1(log_errors(replace(kind, compute_eff=float(c)), rows))))


#: (kind, stack) pairs fitted apart from their kind (the keys of `stack_rows`).
Apart = frozenset[tuple[str, str]]


def counted_rows(cases: list[Case], scenarios: tuple[str, ...] = COST_MODEL_SCENARIOS,
                 skip_kinds: frozenset[str] = frozenset(),
                 keep: Callable[[PreparedCase], bool] = lambda row: True,
                 apart: Apart = frozenset()) -> dict[str, list[PreparedCase]]:
    """Counted rows of the given scenarios that `keep` accepts and that can be predicted, by hardware
    kind; rows of a stack fitted apart (`apart`, see `stack_rows`) are not their kind's."""
    by_kind: dict[str, list[PreparedCase]] = defaultdict(list)
    for row in _prepared(cases, scenarios, lambda r: r.chip.kind not in skip_kinds and (r.chip.kind, r.stack) not in apart and keep(r)):
        by_kind[row.chip.kind].append(row)
    return dict(by_kind)


def _prepared(cases: list[Case], scenarios: tuple[str, ...], keep: Callable[[PreparedCase], bool]) -> Iterator[PreparedCase]:
    """Counted rows of the given scenarios that `keep` accepts and that can be predicted, prepared
    (`keep` first: checking that a saturated run can be predicted simulates it)."""
    for case in cases:
        if case.scenario in scenarios and case.counted:
            prepared = prepare_case(case)
            if isinstance(prepared, PreparedCase) and keep(prepared) and _predictable(prepared):
                yield prepared


def _predictable(row: PreparedCase) -> bool:
    try:
        row.predict(prior_efficiency())
    except TokenfleetError:  # e.g. a saturated run without a published prompt length
        return False
    return True


def fitting_rows(cases: list[Case], apart: Apart = frozenset()) -> dict[str, list[PreparedCase]]:
    """The rows each kind is fitted on: its static and per_user rows (the cost model alone); for a
    kind that has none, its saturated `throughput` rows (through the simulator). Every other served
    row stays out of the fit, so its error tests cost model and simulator out of sample; so do the
    rows of the stacks in `apart`, which have fits of their own."""
    fitting = counted_rows(cases, apart=apart)
    return fitting | counted_rows(cases, ("throughput",), skip_kinds=frozenset(fitting), apart=apart)


def runs_format(row: PreparedCase, compute_format: str) -> bool:
    return COMPUTE_FORMAT[row.deployment.weight_precision] == compute_format


def saturated_rows(cases: list[Case], base: dict[str, list[PreparedCase]], apart: Apart = frozenset()) -> dict[str, list[PreparedCase]]:
    """Each kind's counted saturated runs (outside the stacks in `apart`) where its own rows
    (`base`) go through the cost model and the runs inform some saturated-step parameter: what
    `fit_saturated` fits on. A kind fitted on its saturated runs (the TPUs) has none left to fit
    more on."""
    rows_by_kind = counted_rows(cases, ("throughput",), apart=apart)
    return {kind: rows for kind, rows in rows_by_kind.items()
            if kind in base and through_cost_model(base[kind]) and saturated_params(rows, base[kind])}


def saturated_params(rows: list[PreparedCase], base_rows: list[PreparedCase]) -> list[str]:
    """The saturated-step parameters `rows` inform, MIN_SATURATED_ROWS runs each: FP4 matmuls;
    FP8 matmuls, where the kind's own rows are mostly not FP8 (else its compute_eff is FP8's
    already); collectives, on runs over more than one chip."""
    informs = {
        "fp4_compute_factor": lambda r: runs_format(r, "fp4"),
        "fp8_compute_factor": lambda r: runs_format(r, "fp8"),
        "comm_eff": lambda r: r.deployment.chips > 1,
    }
    names = [name for name, test in informs.items() if sum(map(test, rows)) >= MIN_SATURATED_ROWS]
    if 2 * sum(runs_format(r, "fp8") for r in base_rows) >= len(base_rows):
        names = [n for n in names if n != "fp8_compute_factor"]
    return names


def fit_saturated(base: Efficiency, rows: list[PreparedCase], base_rows: list[PreparedCase]) -> Efficiency:
    """`base` with the saturated-step parameters that `rows` inform fitted on them, jointly (the
    other parameters held); `base` unchanged where they inform none (a leave-one-source-out fold
    may leave too few). A format factor never takes matmuls above peak."""
    names = saturated_params(rows, base_rows)
    if not names:
        return base
    lower = np.array([SATURATED_PARAMS[n][0] for n in names])
    upper = np.array([min(SATURATED_PARAMS[n][1], 0.95 / base.compute_eff) if n.endswith("_compute_factor") else SATURATED_PARAMS[n][1] for n in names])
    prior = np.array([SATURATED_PARAMS[n][2] for n in names])
    return _fit_through_simulator(base, names, rows, (lower, upper), np.clip(prior, lower, upper * 0.99),
                                  lambda x: (x - prior) / SATURATED_PRIOR_WIDTH)


def _fit_through_simulator(base: Efficiency, names: list[str], rows: list[PreparedCase], bounds: tuple[np.ndarray, np.ndarray],
                           start: np.ndarray, prior: Callable[[np.ndarray], np.ndarray]) -> Efficiency:
    """`base` with the parameters `names` fitted on `rows`, jointly, the others held (through the
    simulator: few, coarse steps); `prior` gives the pull towards the prior, one term per name."""
    def with_values(x: np.ndarray) -> Efficiency:
        return replace(base, **{n: float(v) for n, v in zip(names, x, strict=True)})

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([log_errors(with_values(x), rows), prior(x)])

    fit = least_squares(residuals, start, bounds=bounds, loss="soft_l1", f_scale=F_SCALE, **THROUGH_SIMULATOR)
    return with_values(fit.x)


def stack_rows(cases: list[Case], min_rows: int = MIN_STACK_ROWS) -> dict[tuple[str, str], list[PreparedCase]]:
    """Each (kind, stack)'s fitting rows: its counted `static` and `per_user` rows, or for a stack
    with none, its counted saturated runs; for stacks with enough of them (`min_rows`) to be fitted
    apart (a stack with fewer is not, and its rows are its kind's like any other)."""
    by_stack: dict[tuple[str, str], list[PreparedCase]] = defaultdict(list)
    for row in _prepared(cases, COST_MODEL_SCENARIOS, lambda r: bool(r.stack)):
        by_stack[(row.chip.kind, row.stack)].append(row)
    with_static = frozenset(by_stack)
    for row in _prepared(cases, ("throughput",), lambda r: bool(r.stack) and (r.chip.kind, r.stack) not in with_static):
        by_stack[(row.chip.kind, row.stack)].append(row)
    return {key: rows for key, rows in by_stack.items() if len(rows) >= min_rows}


def through_cost_model(rows: list[PreparedCase]) -> bool:
    """Whether fitting rows go through the cost model alone (`static` and `per_user` rows): a kind's
    are then fitted from the prior in fine steps (`fit_rows`), a stack's jointly with its kind
    (`fit_jointly`); otherwise they are replayed through the simulator."""
    return all(r.case.scenario in COST_MODEL_SCENARIOS for r in rows)


def stack_efficiency(kind: Efficiency, joint: dict[str, Efficiency], stack: str, rows: list[PreparedCase]) -> Efficiency:
    """A stack's fit beside its kind's: its compute efficiency from the joint fit (`fit_jointly`)
    where it was fitted there, else fitted on its saturated `rows` (`fit_stack`)."""
    return replace(kind, compute_eff=joint[stack].compute_eff) if stack in joint else fit_stack(kind, rows)


def fit_stack(base: Efficiency, rows: list[PreparedCase]) -> Efficiency:
    """The kind's parameters with the compute efficiency its stack's `rows` reach (base unchanged on
    too few rows: a leave-one-source-out fold may leave too few)."""
    if len(rows) < MIN_STACK_ROWS:
        return base
    return _fit_through_simulator(base, ["compute_eff"], rows, (np.array([STACK_COMPUTE_LOWER]), np.array([UPPER[1]])),
                                  np.array([base.compute_eff]), lambda x: np.log(x / base.compute_eff) / np.log(2) / STACK_PRIOR_WIDTH)


def calibrate(cases: list[Case], track: Track | None = None, workers: int | None = 1) -> dict[str, KindFit]:
    """Each kind's fit (see the module docstring); the kinds are fitted on `workers` processes
    (None: all cores), `track` wrapping the loop over them (e.g. a progress bar)."""
    workers = worker_count(workers)
    fit = _FitInputs.of(cases)
    jobs = [KindJob(kind, rows, fit.saturated.get(kind, []), fit.stacks_of(kind), fit.too_few(kind)) for kind, rows in sorted(fit.base.items())]
    return {f.kind: f for f in in_order(KindJob.fit, jobs, workers, track, "fitting kinds")}


@dataclass(frozen=True)
class _FitInputs:
    """The prepared rows of every step of a fit: each kind's own (`base`), its saturated runs, and the
    rows of each (kind, stack), fitted apart where there are enough (`apart`)."""

    base: dict[str, list[PreparedCase]]
    saturated: dict[str, list[PreparedCase]]
    every_stack: dict[tuple[str, str], list[PreparedCase]]
    apart: Apart

    @classmethod
    def of(cls, cases: list[Case]) -> _FitInputs:
        every_stack = stack_rows(cases, min_rows=1)
        apart = _apart(every_stack)
        base = fitting_rows(cases, apart)
        if orphans := frozenset(key for key in apart if key[0] not in base):  # no rows of its kind's own to stand apart from
            apart -= orphans
            base = fitting_rows(cases, apart)
        return cls(base, saturated_rows(cases, base, apart), every_stack, apart)

    def stacks_of(self, kind: str) -> dict[str, list[PreparedCase]]:
        return {stack: rows for (k, stack), rows in sorted(self.every_stack.items()) if (k, stack) in self.apart and k == kind}

    def too_few(self, kind: str) -> tuple[tuple[str, int], ...]:
        return tuple((stack, len(rows)) for (k, stack), rows in sorted(self.every_stack.items()) if k == kind and (k, stack) not in self.apart)


def _apart(every_stack: dict[tuple[str, str], list[PreparedCase]]) -> Apart:
    """The (kind, stack) pairs with enough rows to be fitted apart (`_FitInputs.of` then drops those
    whose kind has no rows of its own)."""
    return frozenset(key for key, rows in every_stack.items() if len(rows) >= MIN_STACK_ROWS)


@dataclass(frozen=True)
class KindJob:
    """What one kind's fit needs: its own rows, its saturated runs, its stacks' runs (fitted apart),
    and the stacks with too few runs to fit apart, with their count."""

    kind: str
    rows: list[PreparedCase]
    saturated: list[PreparedCase]
    stacks: dict[str, list[PreparedCase]]
    too_few: tuple[tuple[str, int], ...]

    def fit(self) -> KindFit:
        base, joint = fit_jointly(self.rows, self.stacks)
        eff = fit_saturated(base, self.saturated, self.rows)
        stack_fits = []
        for stack, srows in self.stacks.items():
            seff = stack_efficiency(eff, joint, stack, srows)
            stack_fits.append(StackFit(stack, seff, tuple(r.case.id for r in srows), *_spread(seff, srows)))
        return KindFit(self.kind, self.rows[0].chip.family, eff, tuple(r.case.id for r in self.rows), *_spread(eff, self.rows),
                       saturated_rows=tuple(r.case.id for r in self.saturated), stacks=tuple(stack_fits),
                       stacks_too_small=self.too_few)


def _spread(eff: Efficiency, rows: list[PreparedCase]) -> tuple[float, float]:
    """(band_log, MAPE) of a fit on its rows: ~80% of them lie within prediction x/ exp(band_log)."""
    predicted = np.array([r.predict(eff) for r in rows])
    measured = np.array([r.case.value for r in rows])
    return float(np.quantile(np.abs(np.log(predicted / measured)), 0.8)), float(np.mean(np.abs(predicted / measured - 1)))


def leave_one_source_out(cases: list[Case], track: Track | None = None, workers: int = 1) -> list[Outcome]:
    """Each fitted row (of any step) predicted by parameters fitted without any row of its source;
    the folds run on `workers` processes (a fold whose fit goes through the simulator takes minutes)."""
    fit = _FitInputs.of(cases)
    folds = []
    for kind, rows in fit.base.items():
        stacks = fit.stacks_of(kind)
        saturated = fit.saturated.get(kind, [])
        fitted = _unique(rows + saturated + [r for srows in stacks.values() for r in srows])
        for source in sorted({r.case.source for r in fitted}):
            folds.append(Fold(source, rows, saturated, stacks, [r for r in fitted if r.case.source == source]))
    return [o for outcomes in in_order(Fold.outcomes, folds, workers, track, "leave one source out") for o in outcomes]


@dataclass(frozen=True)
class Fold:
    """One kind's fit without one source, and that source's fitted rows to predict with it."""

    source: str
    base: list[PreparedCase]
    saturated: list[PreparedCase]
    stacks: dict[str, list[PreparedCase]]
    held: list[PreparedCase]

    def outcomes(self) -> list[Outcome]:
        def kept(rows: list[PreparedCase]) -> list[PreparedCase]:
            return [r for r in rows if r.case.source != self.source]

        eff, joint = fit_jointly(kept(self.base), {name: kept(srows) for name, srows in self.stacks.items()})
        if self.saturated:  # refitted without the source (the held rows' predictions depend on it)
            eff = fit_saturated(eff, kept(self.saturated), kept(self.base))
        out = []
        for stack in sorted({r.stack for r in self.held}):
            # a stack with too few rows left (or none fitted apart) is predicted with the kind's fit
            eff_here = stack_efficiency(eff, joint, stack, kept(self.stacks.get(stack, []))) if stack else eff
            out += [Outcome(r.case, r.chip.family, r.predict(eff_here), deployment=r.deployment.describe())
                    for r in self.held if r.stack == stack]
        return out


def _unique(rows: list[PreparedCase]) -> list[PreparedCase]:
    return list({r.case.id: r for r in rows}.values())


def write_efficiency(fits: dict[str, KindFit], cases_path: Path, out: Path) -> None:
    """Store the fitted values with the date, the input file's hash and the rows used."""
    doc = {
        "fitted_on": dt.date.today().isoformat(),
        "cases_file": cases_path.name,
        "cases_sha256_16": hashlib.sha256(cases_path.read_bytes()).hexdigest()[:16],
        "method": "tokenfleet.validation.calibrate: soft-L1 least squares on log(predicted/measured) "
        "with a weak prior, static and per_user rows, trust != claim (kinds without such rows: "
        "their throughput rows, through the serving simulator, from the best point of a grid over "
        "mem_eff and compute_eff); then, on the kind's saturated throughput rows (saturated_rows), "
        "through the simulator, the others held, those of fp4_compute_factor, fp8_compute_factor "
        "(where the kind's own rows are mostly not FP8) and comm_eff (runs on several chips) that "
        "4 or more of them inform, jointly; then, per "
        "software stack of validation/data/stacks.yaml, its own compute_eff (stacks.<stack>.rows, "
        "out of the kind's own rows): on its static and per_user rows, jointly with the kind's "
        "parameters; for a stack with none, on its throughput rows, through the simulator, the "
        "kind's other parameters held; overlap held per family (calibrate.HELD, from a measured GEMM sweep)",
        "kinds": {
            f.kind: {
                "family": f.family,
                "params": _rounded(f.efficiency),
                "band_log": round(f.band_log, 4),
                "in_sample_mape": round(f.mape, 4),
                "rows": list(f.rows),
                **({"saturated_rows": list(f.saturated_rows)} if f.saturated_rows else {}),
                **({"stacks": {st.stack: {"params": _rounded(st.efficiency), "band_log": round(st.band_log, 4),
                                          "in_sample_mape": round(st.mape, 4), "rows": list(st.rows)} for st in f.stacks}}
                   if f.stacks else {}),
            }
            for f in fits.values()
        },
    }
    out.write_text("# Written by `tokenfleet calibrate --write`; do not edit by hand.\n" + yaml.safe_dump(doc, sort_keys=False))


def _rounded(eff: Efficiency) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in asdict(eff).items()}
