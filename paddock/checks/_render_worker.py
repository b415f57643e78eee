"""Render chat templates in a throwaway process, for the sanity stage.

A chat template is a program written by the submitter. It runs here, not in the stage's
own process, because Jinja2's sandbox stops attribute tricks but not a loop over
``range(100000)`` nested three deep or a ``'x' * 10**10``: this process sets its own
memory and CPU limits before rendering anything, and the caller kills it at a wall-clock
deadline. The environment mirrors what transformers (and so vLLM and paddock's relay)
builds: ``ImmutableSandboxedEnvironment`` with ``loopcontrols``, a ``{% generation %}``
tag, ``raise_exception``, ``strftime_now``, a non-escaping ``tojson``.

Run by path with ``python -I``; it imports only the standard library and jinja2. Reads one
JSON request on stdin and writes one JSON answer on stdout: for each template name, an
error kind and message or none.
"""

from __future__ import annotations

import json
import resource
import sys
from datetime import datetime
from typing import Any


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            call = self.call_method("_render_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render_body(self, caller: Any) -> str:
            return str(caller())

    class Namespace(jinja2.utils.Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} refused")
            super().__setitem__(name, value)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = Namespace
    return env


def _render(env: Any, source: str, request: dict[str, Any]) -> dict[str, str] | None:
    import jinja2

    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        return {"kind": "syntax", "error": f"line {exc.lineno}: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - any failure to compile is the template's
        return {"kind": "syntax", "error": f"{type(exc).__name__}: {exc}"}
    limit = int(request["max_output"])
    for case in request["conversations"]:
        messages = case["messages"]
        try:
            size = 0
            parts: list[str] = []
            for chunk in template.generate(
                messages=messages, add_generation_prompt=True, **request["context"]
            ):
                size += len(chunk)
                if size > limit:
                    return {"kind": "too_long", "error": f"more than {limit} characters"}
                parts.append(chunk)
        except MemoryError:
            return {"kind": "memory", "error": "it ran out of memory"}
        except RecursionError:
            return {"kind": "raised", "error": "RecursionError: it recursed without end"}
        except Exception as exc:  # noqa: BLE001 - the template's own failure, reported
            if case.get("optional"):
                continue
            return {"kind": "raised", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        text = "".join(parts)
        if not case.get("optional") and messages[-1]["content"] not in text:
            return {"kind": "drops_content", "error": "the user's last message is not in it"}
    return None


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    env = _environment()
    _limit(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    answer = {name: _render(env, source, request) for name, source in request["templates"].items()}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
