"""Parity: does the deployed endpoint compute what the submitted model computes?

The sanity stage runs the model with transformers in float32 and keeps a *reference*::

    {"max_new_tokens": N,
     "prompts": [{"text": str,                 # the user prompt (before the chat template)
                  "prompt_token_ids": [int],   # after the chat template
                  "tokens": [int],             # N greedy token ids (EOS does not stop it)
                  "logprobs": [float],         # log-prob of the chosen token per step
                  "margins": [float]}]}        # logprob(top1) - logprob(top2) per step

After deploy, `check_parity` sends the same token ids to the endpoint's
``/v1/completions`` (greedy, ``ignore_eos``) and compares step by step. A differing token
is forgiven only where the reference itself had a near-tie (margin < tolerance): two
kernels may break a tie differently, after which the continuations legitimately diverge,
so comparison of that prompt ends there. This catches wrong dtypes (bfloat16 garbage on
CPU), corrupted or mis-mapped weights, and a wrong tokenizer/model pairing.

The control plane never imports vLLM: this module talks HTTP (httpx).
"""

from __future__ import annotations

import inspect
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from paddock.errors import TransientError

__all__ = ["ParityReport", "PromptParity", "check_parity", "reference_from_model"]


@dataclass
class PromptParity:
    index: int
    text: str
    ok: bool
    compared_steps: int  # steps whose tokens were compared (agreeing or tolerated flip)
    tolerated_flip_at: int | None = None  # step of a forgiven near-tie flip, if any
    max_logprob_diff: float = 0.0
    endpoint_tokens: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    ok: bool
    message: str
    prompts: list[PromptParity]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    endpoint: str,
    model: str,
    reference: dict[str, Any],
    *,
    tolerance: float = 0.05,
    logprob_tolerance: float = 0.1,
    timeout: float = 60,
    client: httpx.Client | None = None,
) -> ParityReport:
    """Compare the endpoint's greedy continuation with `reference` (see module doc).

    `tolerance` (nats): a token flip is tolerated only where the reference's
    top1-top2 margin is below it. `logprob_tolerance` (nats): the largest allowed
    difference between the chosen token's log-prob on both sides.
    Raises TransientError when the endpoint cannot be reached or answers 5xx.
    """
    base = endpoint.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    n = int(reference["max_new_tokens"])
    own_client = client is None
    http = client or httpx.Client(timeout=timeout)
    prompts = list(reference["prompts"])
    try:
        # All prompts at once: the server batches them as it will users' requests, and the
        # check takes about one reply's time instead of one per prompt.
        with ThreadPoolExecutor(max_workers=max(len(prompts), 1)) as pool:
            results = list(
                pool.map(
                    lambda i, ref: _check_prompt(
                        http, base, model, i, ref, n, tolerance, logprob_tolerance
                    ),
                    range(len(prompts)),
                    prompts,
                )
            )
        bad = [r for r in results if not r.ok]
        if bad:
            _add_token_texts(http, base, model, reference, bad)
    finally:
        if own_client:
            http.close()

    bad = [r for r in results if not r.ok]
    if bad:
        lines = [p for r in bad for p in r.problems]
        message = f"parity FAILED for {len(bad)} of {len(results)} prompts: " + "; ".join(lines)
    else:
        flips = [r for r in results if r.tolerated_flip_at is not None]
        steps = sum(r.compared_steps for r in results)
        worst = max((r.max_logprob_diff for r in results), default=0.0)
        message = (
            f"parity ok: {len(results)} prompts, {steps} steps compared, "
            f"max logprob diff {worst:.2g} nats"
            + (f", {len(flips)} near-tie flip(s) tolerated" if flips else "")
        )
    return ParityReport(ok=not bad, message=message, prompts=results)


def _check_prompt(
    http: httpx.Client,
    base: str,
    model: str,
    index: int,
    ref: dict[str, Any],
    n: int,
    tolerance: float,
    logprob_tolerance: float,
) -> PromptParity:
    body = {
        "model": model,
        "prompt": list(ref["prompt_token_ids"]),
        "max_tokens": n,
        "temperature": 0,
        "logprobs": 2,
        "ignore_eos": True,  # the reference does not stop at EOS either
        "repetition_penalty": 1.0,  # override generation_config defaults vLLM applies
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "skip_special_tokens": False,
    }
    result = PromptParity(index=index, text=ref.get("text", ""), ok=True, compared_steps=0)
    try:
        r = http.post(f"{base}/v1/completions", json=body)
    except httpx.HTTPError as exc:
        raise TransientError(f"parity: cannot reach {base}: {exc}") from exc
    if r.status_code >= 500:
        raise TransientError(f"parity: {base} answered {r.status_code}: {r.text[:300]}")
    if r.status_code != 200:
        result.ok = False
        result.problems.append(f"prompt {index}: endpoint answered {r.status_code}: {r.text[:300]}")
        return result
    choice = r.json()["choices"][0]
    got_tokens, got_logprobs = _endpoint_tokens(choice)
    result.endpoint_tokens = got_tokens

    ref_tokens = list(ref["tokens"])
    ref_logprobs = list(ref["logprobs"])
    margins = list(ref["margins"])
    for step, want in enumerate(ref_tokens):
        if step >= len(got_tokens):
            result.ok = False
            result.problems.append(
                f"prompt {index}: endpoint returned {len(got_tokens)} tokens, "
                f"reference has {len(ref_tokens)}"
            )
            break
        got = got_tokens[step]
        if got != want:
            margin = margins[step]
            if margin < tolerance:
                result.tolerated_flip_at = step
                result.compared_steps = step + 1
                break  # continuations legitimately diverge after a near-tie flip
            result.ok = False
            result.problems.append(
                f"prompt {index} step {step}: endpoint chose token {got}, reference {want} "
                f"with margin {margin:.2f} nats (> {tolerance:g})"
            )
            break
        result.compared_steps = step + 1
        got_lp = got_logprobs[step] if step < len(got_logprobs) else None
        if got_lp is None or not math.isfinite(got_lp):
            continue
        diff = abs(got_lp - ref_logprobs[step])
        result.max_logprob_diff = max(result.max_logprob_diff, diff)
        if diff > logprob_tolerance:
            result.ok = False
            result.problems.append(
                f"prompt {index} step {step}: token {got} has logprob {got_lp:.4f} at the "
                f"endpoint, {ref_logprobs[step]:.4f} in the reference "
                f"(|diff| {diff:.3f} > {logprob_tolerance:g})"
            )
            break
    return result


def _endpoint_tokens(choice: dict[str, Any]) -> tuple[list[int], list[float | None]]:
    """Token ids and chosen-token logprobs from a vLLM completion choice."""
    lp = choice.get("logprobs") or {}
    logprobs = list(lp.get("token_logprobs") or [])
    ids = choice.get("token_ids")
    if ids is None:  # older vLLM: tokens come back as "token_id:17"
        ids = [int(str(t).rsplit(":", 1)[1]) for t in lp.get("tokens") or []]
    return [int(t) for t in ids], logprobs


def _add_token_texts(
    http: httpx.Client,
    base: str,
    model: str,
    reference: dict[str, Any],
    bad: list[PromptParity],
) -> None:
    """Decorate problem lines with token texts, via vLLM's /detokenize (best effort)."""

    def text(tok: int) -> str | None:
        try:
            r = http.post(f"{base}/detokenize", json={"model": model, "tokens": [tok]})
            return r.json()["prompt"] if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    for res in bad:
        ref = reference["prompts"][res.index]
        for k, line in enumerate(res.problems):
            if " chose token " not in line:
                continue
            step = int(line.split(" step ", 1)[1].split(":", 1)[0])
            got, want = res.endpoint_tokens[step], ref["tokens"][step]
            got_t, want_t = text(got), text(want)
            if got_t is not None:
                line = line.replace(f"token {got},", f"token {got} ({got_t!r}),", 1)
            if want_t is not None:
                line = line.replace(f"reference {want} ", f"reference {want} ({want_t!r}) ", 1)
            res.problems[k] = line


def reference_from_model(
    model_dir: Path, prompts: list[str], max_new_tokens: int, *, model: Any = None
) -> dict:
    """Greedy reference for `prompts` computed with transformers in float32 on CPU.

    Each prompt goes through the model directory's chat template (as a single user
    message, with the generation prompt). Generation is a plain greedy loop over raw
    logits for exactly `max_new_tokens` steps (EOS does not stop it, no
    generation-config processors), which is what the endpoint is asked for. ``model``:
    the directory's model already loaded in float32 (a caller that checked it), so the
    weights are not read and built a second time.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    cache_name = _cache_keyword(model)
    out: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "prompts": []}
    with torch.inference_mode():
        for text in prompts:
            ids = _chat_ids(tok, text)
            input_ids = torch.tensor([ids], dtype=torch.long)
            cache = None
            tokens: list[int] = []
            logprobs: list[float] = []
            margins: list[float] = []
            for _ in range(max_new_tokens):
                res = model(input_ids=input_ids, use_cache=True, **{cache_name: cache})
                cache = getattr(res, cache_name)
                lp = torch.log_softmax(res.logits[0, -1].float(), dim=-1)
                top = torch.topk(lp, 2)
                chosen = int(top.indices[0])
                tokens.append(chosen)
                logprobs.append(float(top.values[0]))
                margins.append(float(top.values[0] - top.values[1]))
                input_ids = torch.tensor([[chosen]], dtype=torch.long)
            out["prompts"].append(
                {
                    "text": text,
                    "prompt_token_ids": ids,
                    "tokens": tokens,
                    "logprobs": logprobs,
                    "margins": margins,
                }
            )
    return out


def _cache_keyword(model: Any) -> str:
    """The name the model's forward takes its KV cache under, and returns it as.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name still works
    but warns, and is to go in 5.40), so the loop asks the model rather than assuming.
    """
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _chat_ids(tok: Any, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    if getattr(tok, "chat_template", None):
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    else:
        enc = tok(text)["input_ids"]
    if hasattr(enc, "keys") and "input_ids" in enc:  # transformers 5 returns a BatchEncoding
        enc = enc["input_ids"]
    if enc and isinstance(enc[0], list):
        enc = enc[0]
    return [int(t) for t in enc]
