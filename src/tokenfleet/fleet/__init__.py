"""Fleet layer: the cheapest mix of deployments for several traffic classes, each with its own
SLOs, found by a MILP over simulated per-replica capacities and verified by simulating the fleet.

plan_file (input) -> candidates (static cost model) -> capacity (simulation, cached) ->
optimize (MILP) -> verify (simulation of the whole fleet) -> report; sweep repeats it."""

from tokenfleet.fleet.plan_file import Plan, load_plan, parse_plan
from tokenfleet.fleet.planner import PlanRun, plan_fleet

__all__ = ["Plan", "PlanRun", "load_plan", "parse_plan", "plan_fleet"]
