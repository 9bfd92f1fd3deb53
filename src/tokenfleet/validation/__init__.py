"""Validation layer: hold predictions against published measurements and fit the efficiencies."""
