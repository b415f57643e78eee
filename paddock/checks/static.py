"""The sanity stage's static half: every file read as data, nothing loaded or run.

The order is cheapest-and-most-decisive first: the listing again (a resumed run may not
have passed through today's download checks), then config.json, the generation limits
against the model's context, the safetensors headers (structure, size, shapes against
the config), the tokenizer, and last the chat template, which needs a child process.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from paddock.checks import config as cfg
from paddock.checks.architectures import expected_tensors
from paddock.checks.files import NEEDED, PICKLE, SourceFile, check_listing, walk_local
from paddock.checks.pickles import check_pickle
from paddock.checks.safetensors_headers import (
    check_against_config,
    parameter_count,
    read_checkpoint,
)
from paddock.checks.template import check_chat_template
from paddock.checks.tokenizer import check_tokenizer, read_tokenizer_config
from paddock.contracts import Checked
from paddock.errors import Rejected

__all__ = ["static_checks"]


def static_checks(
    model_dir: Path,
    all_files: list[str],
    *,
    allow_custom_code: bool,
    allow_pickle: bool,
    max_parameters: int,
    max_input_tokens: int | None = None,
    max_output_tokens: int = 0,
    context_cap: int | None = None,
) -> Checked:
    """Refuse what must never be served; returns facts for the timeline.

    ``max_input_tokens``/``max_output_tokens`` are the submission's generation limits and
    ``context_cap`` the serving target's longest context: given, they are checked against
    the model's own context length.
    """
    patterns = [*NEEDED, *(PICKLE if allow_pickle else ())]
    check_listing(
        [SourceFile(name) for name in all_files],
        patterns=patterns,
        allow_custom_code=allow_custom_code,
        allow_pickle=allow_pickle,
        max_bytes=None,
    )
    walk_local(model_dir)  # what was fetched: regular files only, no links
    config = cfg.read_config(model_dir)
    tokenizer_config = read_tokenizer_config(model_dir)
    if not allow_custom_code:
        cfg.check_custom_code(config, tokenizer_config)
    arch = cfg.architecture(config)
    cfg.config_dtype(config)
    if max_input_tokens is not None:
        cfg.check_context(
            config,
            cap=context_cap or cfg.context_length(config) or max_input_tokens + max_output_tokens,
            max_input_tokens=max_input_tokens,
            max_output_tokens=max_output_tokens,
        )
    else:
        cfg.context_length(config)
    weights = sorted(model_dir.glob("*.safetensors"))
    if allow_pickle:
        for path in sorted(model_dir.iterdir()):
            if any(fnmatch.fnmatch(path.name, p) for p in PICKLE):
                check_pickle(path)
    params = 0
    if weights:
        tensors = read_checkpoint(model_dir, weights)
        params = parameter_count(tensors)
        if params > max_parameters:
            raise Rejected(
                f"the model has {params:,} parameters; the limit is {max_parameters:,}: submit "
                "a smaller model (or ask an operator to raise PADDOCK_MAX_PARAMETERS)"
            )
        expected = expected_tensors(config, arch)
        if expected is not None:
            check_against_config(tensors, expected)
    check_tokenizer(model_dir, config)
    check_chat_template(model_dir, tokenizer_config)
    return Checked(architecture=arch, parameters=params)
