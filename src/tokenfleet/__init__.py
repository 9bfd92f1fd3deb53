"""tokenfleet: which hardware for which LLM traffic, with numbers a planner can defend."""

__version__ = "0.1.0"
