"""Name the model's chat template to vLLM when there is only one to name.

Given no ``--chat-template``, vLLM's API server looks for a processor's template before the
tokenizer's, and that search loads the tokenizer a second time (about 1 s of every start on
this machine's CPU, on the deploy's critical path). A text model that ships a single
template (``chat_template.jinja``, and the same text wherever else it is written) gets that
template either way, so the server is told the file. A model with several different ones —
named variants such as ``tool_use``, or a processor's own — is left to vLLM's search.
"""

from __future__ import annotations

from pathlib import Path

from paddock.checks.config import read_json
from paddock.checks.template import find_templates
from paddock.errors import PaddockError

__all__ = ["single_template"]


def single_template(model_dir: Path) -> Path | None:
    """``model_dir/chat_template.jinja`` if it is the model's one chat template, else None."""
    jinja = model_dir / "chat_template.jinja"
    if not jinja.is_file():
        return None
    try:
        config_path = model_dir / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        found = find_templates(model_dir, config)
    except (PaddockError, OSError, ValueError):
        return None  # vLLM reports what it makes of such files itself
    return jinja if len(set(found.values())) == 1 else None
