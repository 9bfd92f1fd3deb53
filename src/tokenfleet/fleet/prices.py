"""$ per chip-hour for each chip of a plan: override, catalog cloud price, or TCO."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tokenfleet.catalog.chips import ChipSpec, Figure, get_chip
from tokenfleet.catalog.pricing import Tco, chip_hour_usd
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.plan_file import Plan


@dataclass(frozen=True)
class ChipPrice:
    usd_per_chip_hour: float
    basis: str  # override, cloud or tco


def _with_capex(chip: ChipSpec, capex_usd: float | None) -> ChipSpec:
    if capex_usd is None:
        return chip
    fig = Figure(value=capex_usd, source="plan file override", date=dt.date.today())
    return chip.model_copy(update={"figures": {**chip.figures, "capex_usd_per_chip": fig}})


def chip_price(plan: Plan, chip_id: str) -> ChipPrice:
    """One chip's price under the plan's basis, with the plan's overrides applied."""
    entry, prices = plan.entry(chip_id), plan.prices
    override = entry.price_usd_per_chip_hour or prices.usd_per_chip_hour.get(chip_id)
    if override is not None:
        return ChipPrice(override, "override")
    capex = entry.capex_usd_per_chip or prices.capex_usd_per_chip.get(chip_id)
    chip = _with_capex(get_chip(chip_id), capex)
    tco = Tco(**prices.tco.model_dump())
    prefer_cloud = prices.basis == "cloud"
    try:
        usd = chip_hour_usd(chip, tco, prefer_cloud=prefer_cloud)
    except TokenfleetError:
        i = plan.hardware.index(entry)
        raise TokenfleetError(
            f"hardware[{i}]: {chip_id} has no capex in the catalog for prices.basis: {prices.basis}; "
            f"give hardware[{i}].capex_usd_per_chip or price_usd_per_chip_hour"
        ) from None
    basis = "cloud" if prefer_cloud and chip.get("price_usd_per_chip_hour") > 0 else "tco"
    return ChipPrice(usd, basis)


def chip_prices(plan: Plan) -> dict[str, ChipPrice]:
    return {h.chip: chip_price(plan, h.chip) for h in plan.hardware}
