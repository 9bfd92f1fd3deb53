"""Serving layer: a discrete-event simulator of replicas with continuous batching."""

from tokenfleet.serve.config import SchedulerConfig, SpecDecode
from tokenfleet.serve.simulate import SimulationResult, simulate

__all__ = ["SchedulerConfig", "SimulationResult", "SpecDecode", "simulate"]
