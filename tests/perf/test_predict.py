import pytest

from tests.conftest import deployment
from tokenfleet.catalog import get_chip, get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf import StepModel, Workload, auto_deployment, batch_shape, predict_static
from tokenfleet.perf.efficiency import calibration_for


def test_static_prediction_is_self_consistent() -> None:
    p = predict_static(get_model("llama-3.1-8b"), get_chip("h100-sxm"), deployment(), Workload(4, 512, 128))
    assert p.e2e_s == pytest.approx(p.ttft_s + p.tpot_s * 127)
    assert p.output_tok_s_total == pytest.approx(4 * 128 / p.e2e_s)
    assert p.usd_per_mtok > 0 and p.joules_per_token > 0 and p.band_factor >= 1


def test_the_decode_breakdown_counts_per_step_parts_once_per_step() -> None:
    """Weight reads and fixed overheads are the same every decode step: O-1 of them, not one."""
    m, chip, dep = get_model("llama-3.1-8b"), get_chip("h100-sxm"), deployment()
    p = predict_static(m, chip, dep, Workload(1, 512, 101))
    one_step = StepModel(m, chip, dep, calibration_for(chip).efficiency).step(batch_shape(m, [1], [600]))
    assert p.breakdown_decode_s["weight_memory_s"] == pytest.approx(100 * one_step.weight_memory_s)
    assert p.breakdown_decode_s["overhead_s"] == pytest.approx(100 * one_step.overhead_s)
    assert p.breakdown_decode_s["weight_memory_s"] > 0.5 * p.breakdown_decode_s["total_s"]  # batch 1 decode reads weights


def test_a_hybrids_memory_holds_each_sequences_state_beside_the_kv() -> None:
    m = get_model("qwen3.5-397b-a17b")
    chip, dep = get_chip("h200-sxm"), deployment(chips=8, tp=8, precision="fp8")
    one = predict_static(m, chip, dep, Workload(1, 1000, 100))
    many = predict_static(m, chip, dep, Workload(65, 1000, 100))
    kv_per_seq = m.kv_bytes(1100, 1.0) / 2  # 2 KV heads: split over 2 of the 8 chips
    state_per_seq = m.state_bytes(2.0) / 8  # 64 value heads: split over all 8; bf16 even with FP8 KV
    assert (many.memory_gb_per_chip - one.memory_gb_per_chip) * 1e9 == pytest.approx(64 * (kv_per_seq + state_per_seq))


def test_a_model_that_does_not_fit_says_by_how_much_and_what_to_do() -> None:
    """An H100's 81,559 MiB (85.5 GB; its '80 GB' is binary), 90% of it usable, against 70.6 B
    16-bit weights and one request's cache."""
    with pytest.raises(TokenfleetError, match=r"needs 141.* GB, has 77.0 GB .*--chips 2 or --precision fp8"):
        predict_static(get_model("llama-3.1-70b"), get_chip("h100-sxm"), deployment(), Workload(1, 1000, 100))


def test_the_suggested_chip_count_is_one_deployments_come_in() -> None:
    """405B in BF16 needs ~5.3 H100s' usable memory for every 1 it has on two: the hint is the next
    power of two (TP8 x PP2 on 16), not 11 (which would run as TP1 x PP11)."""
    with pytest.raises(TokenfleetError, match=r"has 153.9 GB usable on 2 x h100-sxm: use --chips 16 or --precision fp8"):
        predict_static(get_model("llama-3.1-405b"), get_chip("h100-sxm"), deployment(chips=2), Workload(1, 100, 10))


def test_an_sram_only_chip_that_does_not_fit_counts_its_sram() -> None:
    """A Groq LPU has no HBM: the message counts its 230 MB of SRAM (it used to say 0.0 GB and
    suggest billions of chips), and the suggested count is one that fits."""
    with pytest.raises(TokenfleetError, match=r"needs 16.1 GB, has 0.2 GB usable on 1 x groq-lpu: use --chips (\d+)") as err:
        predict_static(get_model("llama-3.1-8b"), get_chip("groq-lpu"), deployment(), Workload(1, 100, 10))
    suggested = int(err.value.args[0].split("--chips ")[1].split()[0])
    assert 16e9 / 230e6 <= suggested < 100


def test_auto_picks_the_smallest_deployment_that_fits() -> None:
    m = get_model("llama-3.1-70b")
    assert auto_deployment(m, get_chip("h100-sxm"), weight_precision="bf16").chips == 2
    assert auto_deployment(m, get_chip("h200-sxm"), weight_precision="fp8").chips == 1
    wafers = auto_deployment(m, get_chip("cerebras-wse3"), weight_precision="bf16")
    assert wafers.chips == 4 and wafers.pp == 4  # 141 GB over 44 GB wafers, pipelined


def test_sram_systems_answer_faster_per_user_than_gpus() -> None:
    m, work = get_model("llama-3.1-70b"), Workload(1, 1000, 200)
    gpu = predict_static(m, get_chip("h100-sxm"), auto_deployment(m, get_chip("h100-sxm"), weight_precision="bf16"), work)
    wafer = predict_static(m, get_chip("cerebras-wse3"), auto_deployment(m, get_chip("cerebras-wse3"), weight_precision="bf16"), work)
    assert wafer.output_tok_s_per_user > 10 * gpu.output_tok_s_per_user
    assert wafer.output_tok_s_per_user < 20_000  # fixed per-layer costs keep SRAM systems far below the roofline


@pytest.mark.parametrize("bad", [(0, 10, 10), (1, -5, 10), (1, 10, 0)])
def test_non_positive_sizes_are_rejected(bad: tuple[int, int, int]) -> None:
    with pytest.raises(TokenfleetError, match="must be a positive integer"):
        Workload(*bad)
