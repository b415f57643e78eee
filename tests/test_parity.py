"""paddock.parity: the reference (transformers) and the comparison logic.

The comparison runs against a stub OpenAI-style HTTP server on 127.0.0.1 that answers
like vLLM 0.32's /v1/completions (token_ids + logprobs); the real vLLM case is in
tests/deployments/test_local.py.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from paddock.errors import TransientError
from paddock.parity import check_parity, reference_from_model
from paddock.testkit.tiny_model import build_tiny_llama

REFERENCE = {
    "max_new_tokens": 4,
    "prompts": [
        {
            "text": "a",
            "prompt_token_ids": [1, 5, 6],
            "tokens": [10, 11, 12, 13],
            "logprobs": [-0.5, -0.6, -0.7, -0.8],
            "margins": [2.31, 0.01, 1.5, 1.5],
        },
        {
            "text": "b",
            "prompt_token_ids": [1, 7],
            "tokens": [20, 21, 22, 23],
            "logprobs": [-1.0, -1.1, -1.2, -1.3],
            "margins": [3.0, 2.0, 2.0, 2.0],
        },
    ],
}
VOCAB = {10: "x", 11: " the", 12: "y", 13: "z", 17: "the", 20: "p", 21: "q", 22: "r", 23: "s",
         45: " a", 99: "!"}  # fmt: skip


class Stub:
    """Answers prompt (tuple of ids) -> (token ids, logprobs); records requests."""

    def __init__(self) -> None:
        self.answers: dict[tuple[int, ...], tuple[list[int], list[float]]] = {}
        self.requests: list[dict] = []
        self.status = 200


@pytest.fixture()
def stub():
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, **body})
            if self.path == "/detokenize":
                out = {"prompt": "".join(VOCAB.get(t, "?") for t in body["tokens"])}
                return self._send(200, out)
            if state.status != 200:
                return self._send(state.status, {"error": "boom"})
            ids, lps = state.answers[tuple(body["prompt"])]
            choice = {
                "index": 0,
                "text": "",
                "token_ids": ids,
                "logprobs": {
                    "tokens": [f"token_id:{t}" for t in ids],
                    "token_logprobs": lps,
                    "top_logprobs": [{f"token_id:{t}": lp} for t, lp in zip(ids, lps, strict=True)],
                    "text_offset": [0] * len(ids),
                },
            }
            self._send(200, {"choices": [choice]})

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    for p in REFERENCE["prompts"]:
        state.answers[tuple(p["prompt_token_ids"])] = (list(p["tokens"]), list(p["logprobs"]))
    yield state
    server.shutdown()
    server.server_close()


def test_identical_endpoint_is_ok(stub) -> None:
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert report.ok, report.message
    assert [p.compared_steps for p in report.prompts] == [4, 4]
    # the prompts go at once, so in no particular order
    [req] = [r for r in stub.requests if r["prompt"] == [1, 5, 6]]
    assert req["max_tokens"] == 4 and req["temperature"] == 0
    assert req["logprobs"] == 2 and req["return_token_ids"] and req["ignore_eos"]


def test_endpoint_with_v1_suffix_is_accepted(stub) -> None:
    assert check_parity(stub.endpoint + "/v1", "m", REFERENCE).ok


def test_large_margin_flip_fails_with_readable_message(stub) -> None:
    stub.answers[(1, 5, 6)] = ([17, 11, 12, 13], [-0.5, -0.6, -0.7, -0.8])
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert not report.ok
    assert (
        "prompt 0 step 0: endpoint chose token 17 ('the'), reference 10 ('x') "
        "with margin 2.31 nats (> 0.05)" in report.message
    )
    assert report.prompts[1].ok


def test_near_tie_flip_is_tolerated_and_ends_the_comparison(stub) -> None:
    # Step 1 has margin 0.01: the flip is forgiven; what follows is not compared.
    stub.answers[(1, 5, 6)] = ([10, 45, 99, 99], [-0.5, -0.61, -9.0, -9.0])
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert report.ok, report.message
    assert report.prompts[0].tolerated_flip_at == 1
    assert report.prompts[0].compared_steps == 2
    assert "near-tie" in report.message


def test_near_tie_not_tolerated_with_smaller_tolerance(stub) -> None:
    stub.answers[(1, 5, 6)] = ([10, 45, 99, 99], [-0.5, -0.61, -9.0, -9.0])
    report = check_parity(stub.endpoint, "m", REFERENCE, tolerance=0.001)
    assert not report.ok
    assert "prompt 0 step 1: endpoint chose token 45 (' a'), reference 11 (' the')" in (
        report.message
    )


def test_logprob_drift_fails(stub) -> None:
    stub.answers[(1, 7)] = ([20, 21, 22, 23], [-1.0, -1.1, -1.9, -1.3])
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert not report.ok
    assert "prompt 1 step 2: token 22 has logprob -1.9000" in report.message
    assert report.prompts[1].max_logprob_diff == pytest.approx(0.7)
    assert check_parity(stub.endpoint, "m", REFERENCE, logprob_tolerance=1.0).ok


def test_short_answer_fails(stub) -> None:
    stub.answers[(1, 7)] = ([20, 21], [-1.0, -1.1])
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert not report.ok
    assert "endpoint returned 2 tokens, reference has 4" in report.message


def test_server_error_is_transient(stub) -> None:
    stub.status = 503
    with pytest.raises(TransientError, match="503"):
        check_parity(stub.endpoint, "m", REFERENCE)


def test_client_error_is_a_failed_report(stub) -> None:
    stub.status = 400
    report = check_parity(stub.endpoint, "m", REFERENCE)
    assert not report.ok and "answered 400" in report.message


def test_unreachable_endpoint_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError, match="cannot reach"):
        check_parity(f"http://127.0.0.1:{port}", "m", REFERENCE, timeout=2)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def test_reference_from_model(tiny_repo: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = reference_from_model(tiny_repo, ["Hello there", "The capital of France is"], 6)
    assert json.loads(json.dumps(ref)) == ref  # stored as JSON
    assert ref["max_new_tokens"] == 6 and len(ref["prompts"]) == 2
    tok = AutoTokenizer.from_pretrained(tiny_repo)
    model = AutoModelForCausalLM.from_pretrained(tiny_repo, dtype=torch.float32).eval()
    for p in ref["prompts"]:
        assert len(p["tokens"]) == len(p["logprobs"]) == len(p["margins"]) == 6
        assert all(m >= 0 for m in p["margins"]) and all(lp <= 0 for lp in p["logprobs"])
        # The chat template was applied: the prompt ends with the assistant header.
        assert tok.decode(p["prompt_token_ids"]).endswith("<|im_start|>assistant\n")
        # Greedy, step by step, from a fresh full forward pass (no KV cache).
        ids = list(p["prompt_token_ids"])
        with torch.inference_mode():
            for step, want in enumerate(p["tokens"]):
                logits = model(torch.tensor([ids])).logits[0, -1]
                lp = torch.log_softmax(logits, -1)
                assert int(lp.argmax()) == want
                assert math.isclose(float(lp[want]), p["logprobs"][step], abs_tol=1e-4)
                ids.append(want)
