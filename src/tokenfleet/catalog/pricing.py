"""What one chip-hour costs: the catalog's cloud price, or capex amortised plus power.

The TCO defaults are assumptions, stated here and printed with results; the fleet planner lets
a plan file override every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.errors import TokenfleetError

HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class Tco:
    """Owning instead of renting: straight-line amortisation plus electricity at the wall."""

    years: float = 4.0  # typical accelerator depreciation schedule (assumption)
    usd_per_kwh: float = 0.10  # US industrial average is ~0.08-0.12 $/kWh (assumption)
    pue: float = 1.3  # modern data-centre power usage effectiveness (assumption)
    utilisation: float = 0.7  # average draw as a share of TDP (assumption)
    overhead_factor: float = 1.5  # host, network, facility and staff on top of the chip (assumption)

    def chip_hour_usd(self, chip: ChipSpec) -> float:
        capex = chip.get("capex_usd_per_chip")
        if capex <= 0:
            raise TokenfleetError(f"{chip.id} has no cloud price and no capex in the catalog: give price_usd_per_chip_hour")
        power_kw = chip.tdp_w / 1000 * self.utilisation * self.pue
        return capex * self.overhead_factor / (self.years * HOURS_PER_YEAR) + power_kw * self.usd_per_kwh


DEFAULT_TCO = Tco()


def chip_hour_usd(chip: ChipSpec, tco: Tco = DEFAULT_TCO, prefer_cloud: bool = True) -> float:
    """Cloud on-demand $/chip-hour where the catalog has one, else the TCO estimate."""
    cloud = chip.get("price_usd_per_chip_hour")
    if prefer_cloud and cloud > 0:
        return cloud
    return tco.chip_hour_usd(chip)


def price_basis(chip: ChipSpec) -> str:
    """Where a chip's hourly price comes from, for tables and reports."""
    return "cloud" if chip.get("price_usd_per_chip_hour") > 0 else "tco-estimate"
