"""Catalog layer: chips and models as sourced data, looked up by name."""

from tokenfleet.catalog.chips import ChipSpec, all_chips, get_chip
from tokenfleet.catalog.models import ModelSpec, all_models, get_model, parse_config

__all__ = ["ChipSpec", "ModelSpec", "all_chips", "all_models", "get_chip", "get_model", "parse_config"]
