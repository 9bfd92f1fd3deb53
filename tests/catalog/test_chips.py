import pytest

from tokenfleet.catalog import all_chips, get_chip
from tokenfleet.catalog.pricing import chip_hour_usd
from tokenfleet.errors import TokenfleetError

REQUIRED = ("bf16_flops_per_s", "sram_bytes", "hbm_bytes", "link_bytes_per_s", "link_latency_s", "chips_per_node", "scaleup_domain_chips", "tdp_w")
ISSUE_CHIPS = ("a100-sxm", "h100-sxm", "h100-pcie", "h200-sxm", "b200", "gb200", "mi300x", "mi325x", "mi355x", "tpu-v5e",
               "tpu-v6e", "tpu-v7", "groq-lpu", "cerebras-wse3", "sambanova-sn40l", "dmatrix-corsair")


def test_catalog_has_every_chip_the_project_covers() -> None:
    assert set(ISSUE_CHIPS) <= set(all_chips())


@pytest.mark.parametrize("chip_id", sorted(all_chips()))
def test_every_figure_has_a_source_and_required_fields_exist(chip_id: str) -> None:
    chip = get_chip(chip_id)
    for key in REQUIRED:
        assert key in chip.figures, key
    for fig in chip.figures.values():
        assert len(fig.source) > 10
    if chip.hbm_bytes > 0:
        assert chip.hbm_bytes_per_s > 0
    if chip.family == "sram" and chip.hbm_bytes == 0:
        assert chip.sram_bytes_per_s > 0
    assert chip_hour_usd(chip) > 0


def test_unknown_chip_suggests_the_closest() -> None:
    with pytest.raises(TokenfleetError, match="did you mean 'h100-sxm'"):
        get_chip("h100-sx")


def test_peak_falls_back_to_a_wider_format_when_not_native() -> None:
    h100 = get_chip("h100-sxm")
    assert "fp4_flops_per_s" not in h100.figures
    assert h100.peak_flops_per_s("fp4") == h100.peak_flops_per_s("fp8")
