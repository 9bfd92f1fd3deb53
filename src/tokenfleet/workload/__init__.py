"""Workload layer: request traces (real and synthetic) in one normalised form."""

from tokenfleet.workload.traces import Trace, builtin_traces, load_trace, synthetic

__all__ = ["Trace", "builtin_traces", "load_trace", "synthetic"]
