"""The error no prediction can avoid: published figures that disagree, and figures beyond physics.

Two kinds of rows put a floor under any model's MAPE on the published measurements:

* rows that state the same conditions (model, chip, the deployment as resolved, scenario, metric,
  batch, lengths, speculative decoding, the fitted software stack; for served rows, their notes
  too) but report different values, e.g. Cerebras' Llama-3.1-70B at its August 2024 launch (450
  tok/s) and two months later (2,148 tok/s). One prediction serves them all, and the best one
  still misses by their spread;
* rows beyond their deployment's roofline (`Outcome.bound`): a model that respects physics
  predicts at most the bound.

`error_floors` gives each row the error of the best prediction its group allows: the prediction
that minimises the group's summed absolute percentage error within the physical bound (the sum is
convex and piecewise linear in the prediction, so its minimum lies at a measured value or at the
bound). MAPE over these floors is the lowest MAPE any model could reach that predicts from the
rows' stated fields as tokenfleet resolves them (its deployment and defaults for what a row leaves
blank, its software stacks) and never beats the roofline. A model free to fit each software
release apart could go lower, at the price of predicting nothing for the next one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable

from tokenfleet.catalog.chips import get_chip
from tokenfleet.validation.cases import SERVED_SCENARIOS, Outcome, beyond, workload_for
from tokenfleet.validation.stacks import stack_of


def same_conditions(o: Outcome) -> Hashable:
    """What a prediction of the row is made from: rows with equal keys get one prediction."""
    c = o.case
    stack = stack_of(c, get_chip(c.hardware).kind)
    return (c.model, c.hardware, o.deployment, c.scenario, c.metric, workload_for(c), c.spec_decode, stack,
            c.notes if c.scenario in SERVED_SCENARIOS else "")


def error_floors(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """Each counted, predicted row's lowest achievable absolute percentage error, by row id."""
    groups: dict[Hashable, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.predicted is not None and o.case.counted:
            groups[same_conditions(o)].append(o)
    floors: dict[str, float] = {}
    for rows in groups.values():
        best = best_shared_prediction([o.case.value for o in rows], rows[0].case.metric, rows[0].bound)
        floors.update({o.case.id: abs(best - o.case.value) / abs(o.case.value) for o in rows})
    return floors


def best_shared_prediction(measured: list[float], metric: str, bound: float | None) -> float:
    """The one prediction with the least summed absolute percentage error over `measured`, among
    those that do not beat `bound` (None: no bound)."""
    candidates = [m for m in measured if bound is None or not beyond(metric, m, bound)]
    if bound is not None:
        candidates.append(bound)

    def summed_error(p: float) -> float:
        return sum(abs(p - m) / abs(m) for m in measured)

    return min(candidates, key=summed_error)
