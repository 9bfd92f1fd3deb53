import dataclasses

import pytest

from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.memory import plan_memory
from tokenfleet.validation.cases import (
    Outcome,
    builtin_cases_path,
    cases_path,
    predict_case,
    read_cases,
)
from tokenfleet.validation.report import ValidationReport, validation_report


@pytest.fixture(scope="module")
def shipped_outcomes() -> list[Outcome]:
    """Every shipped row predicted once (served rows on all cores: a few minutes on two)."""
    return validation_report(builtin_cases_path()).outcomes


def test_every_static_and_per_user_row_is_predicted_or_explained() -> None:
    for case in read_cases(builtin_cases_path()):
        if case.scenario in ("static", "per_user"):
            outcome = predict_case(case)
            assert outcome.predicted is not None or "speculative" in outcome.reason, (case.id, outcome.reason)


def test_claims_are_shown_but_not_counted(shipped_outcomes: list[Outcome]) -> None:
    outcomes = shipped_outcomes
    table = ValidationReport.mape_table(outcomes)
    counted = sum(v["rows"] for k, v in table.items() if "/" not in k and ":" not in k)
    assert counted == sum(o.error is not None and o.case.trust != "claim" for o in outcomes)


def test_served_rows_go_through_the_simulator_or_say_why(shipped_outcomes: list[Outcome]) -> None:
    """Throughput and server rows are simulated; the only unpredicted ones name their gap."""
    for outcome in shipped_outcomes:
        case = outcome.case
        if case.scenario in ("throughput", "server") and outcome.predicted is None:
            assert any(w in outcome.reason for w in ("prompt length not published", "unknown model", "nothing to replay")), (case.id, outcome.reason)


def test_a_saturated_run_is_limited_by_the_engine_not_the_arrivals() -> None:
    """A throughput row's prediction is the simulator's output rate with every request at t=0."""
    from tokenfleet.validation.served import note_value, served_case

    sc = served_case("trtllm-bench, infinite request rate; num_requests=30000; max_num_seqs=512", "throughput", 128, 128)
    assert sc.requests == 4000 and sc.cfg.max_num_seqs == 512 and note_value("target_qps=73.5;", "target_qps") == 73.5
    case = next(c for c in read_cases(builtin_cases_path()) if c.id == "GT094")
    assert predict_case(case).predicted == pytest.approx(case.value, rel=0.5)


def test_rows_measured_with_the_inferencex_client_replay_its_random_lengths() -> None:
    """Its random dataset draws each length uniformly from [int(0.8 x nominal), nominal]."""
    from tokenfleet.validation.served import _trace, served_case

    notes = "vLLM-TPU serving, InferenceX client, random dataset, ignore-eos; num_prompts=320; per-request lengths randomised (range ratio 0.8)"
    trace = _trace(served_case(notes, "throughput", 1024, 8192), None, 1)
    assert len(trace) == 320 and not trace.arrival_s.any()
    assert (trace.input_tokens.min(), trace.input_tokens.max()) >= (819, 1000) and trace.input_tokens.max() <= 1024
    assert trace.output_tokens.min() >= 6553 and trace.output_tokens.mean() < 0.95 * 8192
    plain = _trace(served_case("vllm bench, range ratio 0.8", "throughput", 1024, 8192), None, 1)  # another client: nominal
    assert set(plain.input_tokens) == {1024} and set(plain.output_tokens) == {8192}


def test_mlperf_rows_replay_their_datasets_lengths_and_say_so() -> None:
    """MLPerf rows publish no prompt length: each request draws one from the dataset's
    distribution (prompts 48-1,021 tokens for llama2-70b), answers scaled to the row's mean."""
    from tokenfleet.validation.cases import dataset_prompt_tokens, mlperf_dataset, workload_for
    from tokenfleet.validation.served import _trace, served_case

    case = next(c for c in read_cases(builtin_cases_path()) if c.id == "GT049")  # 8 x B200, llama2-70b Offline
    assert not case.input_tokens and dataset_prompt_tokens(case) == 222 == workload_for(case).input_tokens
    trace = _trace(served_case(case.notes, "throughput", 222, 294, dataset=mlperf_dataset(case) or ""), None, 1)
    assert trace.input_tokens.min() < 60 and trace.input_tokens.max() > 900
    assert trace.input_tokens.mean() == pytest.approx(222.3, abs=1) and trace.output_tokens.mean() == pytest.approx(294, abs=1)
    outcome = predict_case(case)
    assert outcome.predicted is not None and "MLPerf dataset's distribution" in outcome.reason
    non_mlperf = next(c for c in read_cases(builtin_cases_path()) if c.input_tokens and c.scenario == "throughput")
    assert mlperf_dataset(non_mlperf) is None and dataset_prompt_tokens(non_mlperf) is None


def test_the_shipped_length_distributions_match_the_published_answer_means() -> None:
    """A check on the copied tables: where MLPerf's reference answers are the dataset's own
    (mixtral-8x7b, llama3.1-405b), their mean is the published tokens per sample."""
    from tokenfleet.validation.datasets import mlperf_lengths

    for model, published in (("mistralai/Mixtral-8x7B-v0.1", 144.84), ("meta-llama/Llama-3.1-405B", 684.68)):
        lengths = mlperf_lengths(model)
        assert lengths is not None and float(lengths.output_quantiles.mean()) == pytest.approx(published, rel=2e-3)
    assert mlperf_lengths("meta-llama/Llama-3.1-8B") is None


def test_an_mlperf_server_runs_rate_counts_a_600_s_run_not_the_replays_drain() -> None:
    """3,000 requests at 10 req/s arrive over 300 s; if the last finishes 60 s later, the replay
    made its tokens in 360 s, but a 600 s MLPerf run with the same drain takes 660 s."""
    from tokenfleet.validation.served import _as_long_as_mlperf_server

    replay = {"duration_s": 360.0, "output_throughput": 3000 * 300 / 360.0, "request_throughput": 3000 / 360.0,
              "total_token_throughput": 0.0, "mean_ttft_ms": 5.0}
    scaled = _as_long_as_mlperf_server(replay, arrivals_s=300.0)
    assert scaled["request_throughput"] == pytest.approx(10 * 600 / 660)
    assert scaled["output_throughput"] == pytest.approx(3000 * 600 / 660) and scaled["mean_ttft_ms"] == 5.0


def test_a_server_replay_above_capacity_delivers_the_offline_rate_not_the_offered_one() -> None:
    """1,000 req/s offered to one H100 (a few dozen req/s of capacity): the replay's long drain
    is a backlog, not the last requests' lifetime, so the 600 s rescale must not scale it away."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf.auto import layout
    from tokenfleet.validation.served import Layout, run_served, served_case

    model, chip = get_model("llama-3.1-8b"), get_chip("h100-sxm")
    lay = Layout(layout(model, chip, 1, weight_precision="fp8", kv_precision="fp8"))
    sc = served_case("target_qps=1000; num_requests=2000", "server", 500, 200)
    offline = run_served(model, chip, lay, sc, None, "throughput")
    server = run_served(model, chip, lay, sc, None, "server")
    assert offline["request_throughput"] < 100
    assert 0.5 * offline["output_throughput"] < server["output_throughput"] <= offline["output_throughput"] * (1 + 1e-9)


def test_a_server_row_with_limits_runs_at_its_own_highest_rate_within_them_whatever_rate_it_published() -> None:
    """MLPerf reports a Server run's latencies at the highest rate its submitter found within the
    p99 limits (the knee); a replay at the published rate would sit at another point of our latency
    curve. So the published rate changes nothing but the note, and the run found meets its limits
    below the Offline rate."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf.auto import layout
    from tokenfleet.validation.served import Layout, run_served, served_case, server_rate_note

    model, chip = get_model("llama-3.1-8b"), get_chip("h100-sxm")
    lay = Layout(layout(model, chip, 1, weight_precision="fp8", kv_precision="fp8"))
    slo = "SLO p99 TTFT<=2 s, p99 TPOT<=0.02 s"
    low, high = (served_case(f"target_qps={q}; {slo}", "server", 2000, 1000) for q in (1, 1000))
    at_low, at_high = (run_served(model, chip, lay, sc, None, "server") for sc in (low, high))
    offline = run_served(model, chip, lay, low, None, "throughput")
    assert at_low == at_high
    assert 1 < at_low["offered_rate_per_s"] < offline["request_throughput"]
    assert all(at_low["slo_met"].values()) and at_low["p99_tpot_ms"] <= 20
    assert server_rate_note(at_low, low) == f"rate: {at_low['offered_rate_per_s']:.3g} req/s, the highest within the p99 limits (the submission's: 1)"


def test_a_server_row_without_transcribed_limits_takes_its_mlperf_benchmarks_own() -> None:
    """The shipped table of MLPerf Server limits agrees with every row that transcribes its own,
    and fills in the one that does not (GT051, llama3.1-405b-interactive: 4.5 s / 80 ms)."""
    import re

    from tokenfleet.validation.served import benchmark_slo, mlperf_slo

    servers = [c for c in read_cases(builtin_cases_path()) if c.scenario == "server"]
    transcribed = [c for c in servers if re.search(r"SLO p99 TTFT<=", c.notes)]
    assert len(transcribed) >= 15
    for case in transcribed:
        assert benchmark_slo(case.notes) == mlperf_slo(case.notes), case.id
    gt051 = next(c for c in servers if c.id == "GT051")
    assert "SLO not transcribed" in gt051.notes
    assert mlperf_slo(gt051.notes) == {"p99_ttft_ms": "<=4500", "p99_tpot_ms": "<=80"}
    assert benchmark_slo("vLLM serve, Poisson arrivals") == {}


def test_an_unpublished_layout_may_run_data_parallel_and_a_published_one_is_kept() -> None:
    from tokenfleet.validation.cases import PreparedCase, prepare_case, served_layouts

    cases = {c.id: c for c in read_cases(builtin_cases_path())}
    p = prepare_case(cases["GT049"])  # 8 chips, layout not published
    assert isinstance(p, PreparedCase)
    layouts = served_layouts(p.case, p.model, p.chip, p.work, p.deployment)
    assert {(lay.deployment.chips, lay.replicas) for lay in layouts} == {(1, 8), (2, 4), (4, 2), (8, 1)}
    assert all(lay.chips == 8 for lay in layouts)
    q = prepare_case(cases["GT157"])  # "one instance on 8 GPUs"
    assert isinstance(q, PreparedCase)
    assert [lay.replicas for lay in served_layouts(q.case, q.model, q.chip, q.work, q.deployment)] == [1]


def test_a_row_whose_submitter_published_its_engine_runs_that_layout_and_those_caps() -> None:
    """NVIDIA's MLPerf v5.0 Llama-3.1-405B Server config on 8 B200s: two TP2 x PP2 instances, at
    most 128 sequences and 1,024 tokens a step; the replay uses exactly that, not its own search."""
    from tokenfleet.validation.cases import PreparedCase, prepare_case, served_layouts
    from tokenfleet.validation.datasets import engine_settings
    from tokenfleet.validation.served import served_case

    cases = {c.id: c for c in read_cases(builtin_cases_path())}
    p = prepare_case(cases["GT024"])
    assert isinstance(p, PreparedCase)
    [lay] = served_layouts(p.case, p.model, p.chip, p.work, p.deployment)
    assert (lay.deployment.tp, lay.deployment.pp, lay.replicas) == (2, 2, 2)
    engine = engine_settings("GT024", "b200")
    assert engine is not None and "llama3_1-405b/Server" in engine.source
    sc = served_case(p.case.notes, "server", 9000, 685, p.case.software, engine=engine)
    assert (sc.cfg.max_num_seqs, sc.cfg.max_num_batched_tokens) == (128, 1024)
    assert engine_settings("GT024", "h100-sxm") is None  # another file reusing the id gets nothing
    amd = engine_settings("GT069", "mi325x")  # AMD's vLLM config for Mixtral on MI325X
    assert amd is not None
    sc = served_case("", "throughput", 427, 145, "unknown (MLPerf v5.1 AMD submission)", engine=amd)
    assert (sc.cfg.max_num_seqs, sc.cfg.max_num_batched_tokens, sc.cfg.gpu_memory_utilization) == (4736, 51200, 0.96)
    assert not sc.cfg.chunked_prefill  # the config turns it off and runs vLLM's own scheduler
    default = served_case("", "throughput", 427, 145)
    assert default.cfg.gpu_memory_utilization == 0.9 and default.cfg.chunked_prefill  # vLLM's defaults
    # AMD's Llama-2-70B config turns chunking off too, but under AMD's own scheduler: mixed steps kept
    llama = engine_settings("GT068", "mi325x")
    assert llama is not None and llama.enable_chunked_prefill is None and "VLLM_LLAMA2_MLPERF_SCHED" in llama.source


def test_amds_interactive_llama2_run_is_replayed_one_instance_per_gpu_as_its_harness_runs() -> None:
    """AMD's v5.1 llama2-70b-interactive Server run on 8 MI300X (GT064): its config is not in the
    mirror, but every config AMD published for that harness runs one vLLM instance per GPU, so the
    replay does too (left to choose it took 4 x TP2, at twice the submitted 29.5 req/s). Under
    the interactive limits (p99 TTFT 450 ms, TPOT 40 ms) eight TP1 replicas sustain a rate near
    the submitted one."""
    from tokenfleet.validation.cases import PreparedCase, prepare_case, served_layouts
    from tokenfleet.validation.datasets import engine_settings

    engine = engine_settings("GT064", "mi300x")
    assert engine is not None and engine.tp == 1 and "target_qps = 29.5" in engine.source and engine.inferred
    p = prepare_case(next(c for c in read_cases(builtin_cases_path()) if c.id == "GT064"))
    assert isinstance(p, PreparedCase)
    [lay] = served_layouts(p.case, p.model, p.chip, p.work, p.deployment)
    assert (lay.deployment.tp, lay.replicas) == (1, 8)
    tok_s, layout_text, _ = p.predict_with_layout()
    assert layout_text == "8 x (1 chip TP1 fp8)" and 20 <= tok_s / 294.45 <= 40  # req/s; submitted 29.5


def test_a_rate_searchs_probes_share_their_requests_lengths() -> None:
    """Common random numbers: a slower probe replays the first requests of the fastest one's draw,
    so what changes between probes is the rate, not the requests (MLPerf's llama2-70b lengths)."""
    from tokenfleet.validation.served import _trace, served_case

    sc = served_case("", "server", 222, 294, dataset="meta-llama/Llama-2-70b-hf")
    fast, slow = _trace(sc, 30.0, 8, 18_000, drawn=18_000), _trace(sc, 20.0, 8, 12_000, drawn=18_000)
    assert (slow.input_tokens == fast.input_tokens[:12_000]).all() and (slow.output_tokens == fast.output_tokens[:12_000]).all()
    assert slow.arrival_s[-1] == pytest.approx(600, rel=0.05) and fast.arrival_s[-1] == pytest.approx(600, rel=0.05)
    fresh = _trace(sc, 20.0, 8, 12_000)  # drawn alone, the same count gives other lengths
    assert not (fresh.input_tokens == slow.input_tokens).all()


def test_an_engine_holding_more_sequences_than_a_steps_budget_runs_the_budgets_worth() -> None:
    """Google's H200 Llama-2-70B Server config: 2,048 running sequences, 1,536 tokens a step.
    Every running sequence decodes in each of our steps, so the replay runs 1,536 at most; with
    TensorRT-LLM the cap is per micro-batch (here one: TP1)."""
    from tokenfleet.validation.datasets import engine_settings
    from tokenfleet.validation.served import served_case

    engine = engine_settings("GT036", "h200-sxm")
    assert engine is not None and (engine.max_num_seqs, engine.max_num_batched_tokens) == (2048, 1536)
    sc = served_case("MLPerf v5.0 closed, llama2-70b Server", "server", 222, 294, "TensorRT-LLM", engine=engine)
    assert (sc.cfg.max_num_seqs, sc.cfg.max_num_batched_tokens, sc.cfg.seqs_per_micro_batch) == (1536, 1536, True)
    vllm = served_case("max_concurrency=64", "throughput", 1000, 100, "vLLM 0.10")
    assert (vllm.cfg.max_num_seqs, vllm.cfg.seqs_per_micro_batch) == (64, False)


def test_a_published_max_util_policy_grows_and_pauses_instead_of_reserving_outputs() -> None:
    """NVIDIA's Llama-3.1-405B Server config sets TensorRT-LLM's max_util policy in its base
    class; without a published policy a TensorRT-LLM row keeps the engine's default, which
    reserves each request's whole output at admission."""
    from tokenfleet.validation.datasets import engine_settings
    from tokenfleet.validation.served import served_case

    engine = engine_settings("GT024", "b200")
    assert engine is not None and engine.batch_scheduler_policy == "max_util"
    assert not served_case("", "server", 9000, 685, "TensorRT-LLM", engine=engine).cfg.reserve_output_kv
    default = engine_settings("GT019", "b200")
    assert default is not None and default.batch_scheduler_policy is None
    assert served_case("", "server", 222, 294, "TensorRT-LLM", engine=default).cfg.reserve_output_kv


def test_a_published_weight_format_replaces_the_chips_default_only_where_the_row_says_none() -> None:
    """NVIDIA's Blackwell Mixtral config says fp4 but quantises to an average of 7.25 bits a weight
    (a per-layer search among formats): the row runs in FP8, the nearest single format, while the
    same submission's Llama-2-70B (plain FP4) keeps the B200 default; a row that states its
    precision keeps it whatever the settings say."""
    from tokenfleet.validation.cases import PreparedCase, precision_for, prepare_case
    from tokenfleet.validation.datasets import EngineSettings, engine_settings

    cases = {c.id: c for c in read_cases(builtin_cases_path())}
    mixtral, llama = (prepare_case(cases[i]) for i in ("GT022", "GT049"))
    assert isinstance(mixtral, PreparedCase) and isinstance(llama, PreparedCase)
    assert cases["GT022"].precision == cases["GT049"].precision == "unknown"
    assert (mixtral.deployment.weight_precision, llama.deployment.weight_precision) == ("fp8", "fp4")
    engine = engine_settings("GT022", "b200")
    assert engine is not None and "effective_bits 7.25" in engine.source
    stated = dataclasses.replace(cases["GT022"], precision="fp4")
    assert precision_for(stated, mixtral.chip) == "fp4"
    with pytest.raises(ValueError, match="weight_precision"):
        EngineSettings(rows=("X",), hardware="b200", weight_precision="fp5", source="test")

def test_rows_run_with_attention_dp_where_their_source_enables_it() -> None:
    """TensorRT-LLM's performance table ran its MoE models with attention DP: Llama-4-Maverick's
    FP8 weights (16-bit embeddings and head) then take 64.6 GB of each H100, not 50, which is what
    its measured throughputs need (the KV room they leave); its dense models and rows without such
    settings keep tensor parallelism."""
    from tokenfleet.validation.cases import PreparedCase, prepare_case

    cases = {c.id: c for name in ("calibration", "trtllm-perf-overview") for c in read_cases(builtin_cases_path(name))}
    maverick, qwen3, dense = (prepare_case(cases[i]) for i in ("GT113", "PO-qwen3-235b-h200-1000x1000", "PO-llama3.1-8b-h100-128x128"))
    assert isinstance(maverick, PreparedCase) and isinstance(qwen3, PreparedCase) and isinstance(dense, PreparedCase)
    assert maverick.deployment.attn_dp and qwen3.deployment.attn_dp and not dense.deployment.attn_dp
    assert 64e9 < plan_memory(maverick.model, maverick.chip, maverick.deployment).weight_bytes_per_chip < 65e9


def test_every_published_engine_setting_fits_the_rows_it_names() -> None:
    from tokenfleet.validation.datasets import _engine_settings

    cases = {c.id: c for name in ("calibration", "trtllm-perf-overview") for c in read_cases(builtin_cases_path(name))}
    for row, engine in _engine_settings().items():
        case = cases[row]
        assert case.hardware == engine.hardware and case.scenario in ("throughput", "server"), row
        if engine.tp is not None:
            assert int(case.num_chips) % (engine.tp * engine.pp) == 0, row

def test_data_parallel_replicas_add_up_their_throughput() -> None:
    """Eight single-chip replicas behind the router serve about eight times one replica."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf import Deployment
    from tokenfleet.validation.served import Layout, run_served, served_case

    model, chip = get_model("llama-3.1-8b"), get_chip("h100-sxm")
    sc = served_case("num_requests=1000", "throughput", 500, 200)
    one = Deployment(chips=1, tp=1, pp=1, weight_precision="fp8", kv_precision="fp8")
    single = run_served(model, chip, Layout(one), sc, None, "throughput")["output_throughput"]
    eight = run_served(model, chip, Layout(one, 8), sc, None, "throughput")["output_throughput"]
    assert eight == pytest.approx(8 * single, rel=0.05)

def test_a_measurement_faster_than_the_roofline_is_flagged() -> None:
    case = next(c for c in read_cases(builtin_cases_path()) if c.id == "GT219")  # 405B, 16 RDUs, 129 tok/s per user
    assert predict_case(case).beyond_roofline  # 810 GB of bf16 weights over 16 x 1.6 TB/s: at most ~32 tok/s
    slower = dataclasses.replace(case, value=20.0)
    outcome = predict_case(slower)
    assert not outcome.beyond_roofline and "roofline" not in outcome.reason

def test_long_validation_loops_report_progress(tmp_path) -> None:
    from tokenfleet.validation.report import validation_report

    lines = builtin_cases_path().read_text().splitlines()
    small = tmp_path / "cases.csv"
    small.write_text("\n".join([lines[0], *[ln for ln in lines if ln.startswith(("GT174,", "GT175,"))]]) + "\n")
    seen: list[tuple[str, int]] = []

    def track(items, description):
        seen.append((description, len(items)))
        return items

    report = validation_report(small, loso=True, track=track)
    assert [o.case.id for o in report.outcomes] == ["GT174", "GT175"] and len(report.loso) == 2
    assert seen == [("predicting rows", 2), ("leave one source out", 1)]

def test_rows_simulated_in_worker_processes_come_back_in_file_order_and_unchanged(tmp_path) -> None:
    lines = builtin_cases_path().read_text().splitlines()
    small = tmp_path / "cases.csv"
    ids = ("GT095,", "GT174,", "GT094,", "GT240,")  # H200 and H100 throughput runs (two workers), a static row, a claim
    small.write_text("\n".join([lines[0], *[ln for i in ids for ln in lines if ln.startswith(i)]]) + "\n")
    parallel = validation_report(small, workers=2).outcomes
    assert [o.case.id for o in parallel] == ["GT095", "GT174", "GT094", "GT240"]
    assert parallel == validation_report(small, workers=1).outcomes

def test_an_mlperf_offline_replay_lasts_as_long_as_the_real_run() -> None:
    """One B200 replica works through at least the whole llama2-70b dataset and at least 600 s,
    so its final drain (the last long answers at a small batch) stays a small share of the run."""
    from tokenfleet.validation.cases import PreparedCase, prepare_case
    from tokenfleet.validation.served import Layout, run_served, served_case

    prepared = prepare_case(next(c for c in read_cases(builtin_cases_path()) if c.id == "GT015"))
    assert isinstance(prepared, PreparedCase)
    sc = served_case("MLPerf Offline", "throughput", 222, 274, dataset="meta-llama/Llama-2-70b-hf")
    one = run_served(prepared.model, prepared.chip, Layout(prepared.deployment), sc, None, "throughput")
    two = run_served(prepared.model, prepared.chip, Layout(prepared.deployment, 2), sc, None, "throughput")
    assert one["completed"] >= 24576 and one["duration_s"] >= 600
    assert two["output_throughput"] == pytest.approx(2 * one["output_throughput"])

def test_a_server_rate_search_sends_arrivals_for_mlperfs_whole_run() -> None:
    """A shorter probe passes rates no server sustains (its batch is still growing when arrivals stop)."""
    from tokenfleet.validation.served import (
        MLPERF_MIN_DURATION_S,
        SERVER_REQUESTS,
        server_probe_requests,
    )

    assert server_probe_requests(150.0) == 150 * MLPERF_MIN_DURATION_S == 90_000
    assert server_probe_requests(1.5) == SERVER_REQUESTS  # a slow 405B server: a p99 still needs its 40 slowest

def test_a_server_row_sustains_no_more_than_its_offline_rate() -> None:
    """GB200 x 4, llama2-70b Server (GT060): the rate search is bounded by the same layout's
    Offline rate (4,000-request probes had passed 16% more)."""
    from tokenfleet.validation.cases import (
        PreparedCase,
        mlperf_dataset,
        prepare_case,
        served_layouts,
    )
    from tokenfleet.validation.served import run_served, served_case

    p = prepare_case(next(c for c in read_cases(builtin_cases_path()) if c.id == "GT060"))
    assert isinstance(p, PreparedCase)
    sc = served_case(p.case.notes, "server", p.work.input_tokens, p.work.output_tokens, p.case.software, mlperf_dataset(p.case) or "")
    assert sc.target_qps is None and dict(sc.slo) == {"p99_ttft_ms": "<=2000", "p99_tpot_ms": "<=200"}
    lay = served_layouts(p.case, p.model, p.chip, p.work, p.deployment)[-1]  # one TP4 replica: the quickest to search
    offline = run_served(p.model, p.chip, lay, sc, None, "throughput")
    server = run_served(p.model, p.chip, lay, sc, None, "server")
    assert all(server["slo_met"].values()) and server["duration_s"] >= 600
    assert 0.8 * offline["output_throughput"] < server["output_throughput"] <= 1.01 * offline["output_throughput"]

def test_a_server_row_runs_the_layout_with_the_highest_rate_within_its_limits() -> None:
    """Under a 6 ms p99 TPOT no single H100 serves FP8 Llama-3.1-8B (over 6 ms a step), a TP2
    pair does: the interactive choice differs from the saturated one (two TP1 replicas)."""
    from tokenfleet.catalog import get_chip, get_model
    from tokenfleet.perf.auto import layout
    from tokenfleet.validation.served import Layout, best_layout, run_served, served_case

    model, chip = get_model("llama-3.1-8b"), get_chip("h100-sxm")
    tp1, tp2 = (layout(model, chip, n, weight_precision="fp8", kv_precision="fp8") for n in (1, 2))
    layouts = [Layout(tp1, 2), Layout(tp2)]
    offline = served_case("num_requests=1000", "throughput", 500, 200)
    assert best_layout(model, chip, layouts, offline, None) == Layout(tp1, 2)
    tight = dataclasses.replace(offline, slo=(("p99_ttft_ms", "<=2000"), ("p99_tpot_ms", "<=6")))
    assert run_served(model, chip, Layout(tp1, 2), tight, None, "server")["output_throughput"] == 0.0
    assert best_layout(model, chip, layouts, tight, None) == Layout(tp2)

def test_the_error_can_be_grouped_by_any_row_field_such_as_the_software_that_ran(tmp_path) -> None:
    lines = builtin_cases_path().read_text().splitlines()
    small = tmp_path / "cases.csv"
    ids = ("GT162,", "GT164,", "GT131,", "GT166,", "GT240,")  # Argonne vLLM rows, one TensorRT-LLM row, a claim
    small.write_text("\n".join([lines[0], *[ln for i in ids for ln in lines if ln.startswith(i)]]) + "\n")
    report = validation_report(small)
    by_software = report.mape_by("software")
    counted = [o for o in report.outcomes if o.case.counted]
    assert sum(cell["rows"] for cell in by_software.values()) == len(counted) == 4  # the claim is left out
    for key, cell in by_software.items():
        errors = [o.error for o in counted if f"{o.family}: {o.case.software}" == key]
        assert cell == {"mape": sum(errors) / len(errors), "rows": len(errors)}
    assert report.as_dict(by="software")["summary"]["mape_by_software"] == by_software
    with pytest.raises(TokenfleetError, match="not a row field"):
        report.mape_by("colour")

def test_no_family_scores_below_its_error_floor(shipped_outcomes: list[Outcome]) -> None:
    """Our predictions respect physics and give rows of the same stated conditions one value, so
    no family's MAPE can be lower than the floor any such model must pay (validation.floor)."""
    report = ValidationReport(shipped_outcomes)
    mape, floor = report.mape_table(report.outcomes), report.floor_table()
    assert floor.keys() == mape.keys()
    for key, cell in mape.items():
        assert floor[key]["mape"] <= cell["mape"] + 1e-12, key

def test_the_shipped_trtllm_table_is_predicted_whole_and_agrees_with_the_calibration_rows_it_shares() -> None:
    """TensorRT-LLM's v1.0-era performance table (5 models x up to 4 chips x 10 lengths) ships as an
    out-of-sample check: every run is simulated, and the 22 runs cases.csv also holds carry the
    same model, chip, layout, lengths and value there."""
    table = read_cases(cases_path("trtllm-perf-overview"))
    calibration = {c.id: c for c in read_cases(cases_path(None))}
    assert len(table) == 152 and len({c.id for c in table}) == 152
    twins = 0
    for case in table:
        assert case.source and case.software and "num_requests=" in case.notes, case.id
        if "same measurement as cases.csv " in case.notes:
            twin = calibration[case.notes.rsplit("cases.csv ", 1)[1]]
            key = ("model", "hardware", "tp", "precision", "input_tokens", "output_tokens", "value")
            assert [getattr(twin, k) for k in key] == [getattr(case, k) for k in key], case.id
            twins += 1
    assert twins == 22
    outcomes = validation_report(cases_path("trtllm-perf-overview")).outcomes
    assert all(o.predicted is not None for o in outcomes), [(o.case.id, o.reason) for o in outcomes if o.predicted is None]
    # a guard on what no fit sees: 21.0% on the 130 runs outside cases.csv (2026-11-25). 19.98% before
    # HBM capacities were read in binary units (2026-11-24: 20.5%, the attention-DP MoE runs on H100
    # got 5.5 GB more cache each and came out faster still); then TensorRT-LLM's own memory rule
    # (its cache a share of the memory left free, 2026-11-25) gave its runs the cache they had: the
    # dense runs and Qwen3-235B on H100 closer, but the runs already too fast at large batch
    # (Maverick on H100 and H200, Llama-3.1-405B's long outputs on H100) faster still, see README.
    # A change to the cost model or the simulator that takes it past 22% is a regression to explain
    unseen = [o.error for o in outcomes if o.error is not None and "same measurement as cases.csv" not in o.case.notes]
    assert len(unseen) == 130 and sum(unseen) / len(unseen) <= 0.22


def test_trtllm_0_17s_table_is_predicted_whole_and_none_of_it_is_calibration_data() -> None:
    """TensorRT-LLM 0.17's table (its TensorRT engine flow: Llama-3.1-8B/70B/405B and Mixtral-8x7B
    at TP 1-8 on H200, H100 and A100, 9 lengths each) ships as a second out-of-sample check: none
    of its 230 runs is in cases.csv, and every one is simulated."""
    table = read_cases(cases_path("trtllm-v0.17"))
    assert len(table) == 230 and len({c.id for c in table}) == 230
    key = ("model", "hardware", "tp", "input_tokens", "output_tokens", "value")
    calibration = {tuple(getattr(c, k) for k in key) for c in read_cases(cases_path(None))}
    for case in table:
        assert "TensorRT-LLM 0.17" in case.software and "num_requests=" in case.notes, case.id
        assert tuple(getattr(case, k) for k in key) not in calibration, case.id
    outcomes = validation_report(cases_path("trtllm-v0.17")).outcomes
    assert all(o.predicted is not None for o in outcomes), [(o.case.id, o.reason) for o in outcomes if o.predicted is None]
    # a guard, as above: 9.8% (2026-11-25; 14.8% before HBM capacities were read in binary units,
    # 12.2% before TensorRT-LLM's runs sized their cache from free memory: Llama-3.1-70B FP8 on one
    # H100 0.43x -> 0.82x, see README)
    errors = [o.error for o in outcomes if o.error is not None]
    assert sum(errors) / len(errors) <= 0.105


def test_argonnes_whole_vllm_sweep_is_predicted_or_refused_and_mostly_out_of_sample() -> None:
    """Argonne's LLM-Inference-Bench vLLM sweep on MI300X and H100 (static batches of 1-256 at
    128-2,048 tokens in and out, 1-8 GPUs, the five models our catalog places) ships as a third
    check: 760 runs, of which cases.csv holds 6 (GT171/GT172 on H100, GT174-GT177 on MI300X). A run is predicted, or refused with the memory
    it lacks (a batch that vLLM ran in waves, preempting, does not fit at once)."""
    table = read_cases(cases_path("argonne-sweep"))
    assert len(table) == 760 and len({c.id for c in table}) == 760
    key = ("model", "hardware", "num_chips", "batch", "input_tokens", "value")
    calibration = {tuple(getattr(c, k) for k in key) for c in read_cases(cases_path(None)) if c.metric == "e2e_s"}
    assert sum(tuple(getattr(c, k) for k in key) in calibration for c in table) == 6
    report = validation_report(cases_path("argonne-sweep"))
    refused = [o for o in report.outcomes if o.predicted is None]
    assert all("does not fit" in o.reason for o in refused) and len(refused) < 30
    by_family = report.mape_table(report.outcomes)
    # guards at the 2026-11-25 figures: H100 13.7% (158 runs, the NVIDIA kind's fit), MI300X 23.5%
    # (581 runs, the llm-inference-bench stack's fit on 4 of them)
    assert by_family["nvidia"]["mape"] <= 0.15 and by_family["nvidia"]["rows"] > 150
    assert by_family["amd"]["mape"] <= 0.25 and by_family["amd"]["rows"] > 550
