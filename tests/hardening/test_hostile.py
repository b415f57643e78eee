"""Hostile and broken submissions: refused at the earliest stage that can tell, with a
sentence the developer can act on, and nothing left in the store, on disk or serving.

Each case runs the real submission flow (under the Prefect test harness) against a model
served from the olah hub mirror, moto S3 or a directory under the allowed source root, and
records what happened for the README's table (see conftest.py). Nothing here starts vLLM:
every refusal happens before the deploy stage.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.submission import submission
from paddock import crud, sources, timeline
from paddock.config import get_settings
from paddock.errors import Rejected
from paddock.submissions import draft
from paddock.testkit.tiny_model import outside_path, payload_marker
from tests.hardening.conftest import Hardening, upload_dir
from tests.utils.blocks import use_hub, use_local_store, use_s3_store, use_serving

PREFIX = "hardening"


@pytest.fixture(scope="module", autouse=True)
def _configured(prefect_harness: None, hub: Any, s3: Any) -> None:
    use_hub(hub, s3)
    use_s3_store(s3, PREFIX)
    use_serving()  # the default target: context capped at 2048, float32 forced


def _store_objects(s3: Any) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket="models", Prefix=PREFIX)
    return [o["Key"] for o in listing.get("Contents", [])]


def _refused(
    s3: Any,
    source: str,
    *,
    revision: str | None = None,
    params: dict[str, Any] | None = None,
) -> timeline.StatusReport:
    """Run the flow on ``source``; assert it was rejected once and left nothing behind."""
    sub = crud.create_submission(
        developer="hostile",
        source=source,
        display_name="hostile",
        requested_revision=revision,
        generation_params=params or {},
    )
    with pytest.raises(Rejected):
        submission(sub.id)
    report = timeline.build(sub.id)
    assert report.status == "failed"
    assert report.failed_stage is not None and report.reason
    failed = next(s for s in report.stages if s.name == report.failed_stage)
    assert failed.attempts == 1, "a rejection must not be retried"
    assert report.stages[-1].name == report.failed_stage, "nothing ran after the rejection"
    # nothing left behind: store, work dir, serving
    assert _store_objects(s3) == []
    assert report.artifacts == []
    assert not (get_settings().work_dir / sub.id).exists(), "the work dir was left behind"
    assert crud.active_deployment(submission_id=sub.id) is None
    return report


def _says(reason: str | None, words: tuple[str, ...]) -> None:
    for word in words:
        assert word.lower() in (reason or "").lower(), f"{word!r} not in: {reason}"


# -- model variants served from the hub --------------------------------------------------

HUB_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    # custom code
    ("custom_code", "download", ("custom code", "modeling_custom.py", "remove the .py")),
    ("auto_map_only", "sanity", ("auto_map", "custom code", "remove auto_map")),
    ("trust_remote_code", "sanity", ("trust_remote_code", "remove the key")),
    # pickle files, with or without safetensors beside them
    ("pickle_only", "download", ("pickle", "pytorch_model.bin", "safetensors")),
    ("pickle_beside_safetensors", "download", ("pickle", "pytorch_model.bin", "delete them")),
    ("pickle_pt", "download", ("pickle", "model.pt", "delete them")),
    ("pickle_pkl", "download", ("pickle", "weights.pkl", "delete them")),
    ("pickle_payload", "download", ("pickle", "can run code", "delete them")),
    # weights: values, tensors against the config, the file format
    ("nan_weights", "sanity", ("NaN", "model.layers.0.mlp.down_proj.weight", "finite")),
    ("inf_weights", "sanity", ("infinite", "model.layers.0.mlp.down_proj.weight")),
    ("missing_tensor", "sanity", ("lack", "model.layers.1.self_attn.k_proj.weight", "random")),
    ("shape_mismatch", "sanity", ("up_proj", "shape [128, 256]", "implies [256, 128]")),
    ("extra_layers", "sanity", ("does not describe", "num_hidden_layers=1", "config.json")),
    ("truncated_safetensors", "sanity", ("truncated", "upload the file again")),
    ("corrupted_safetensors", "sanity", ("corrupted", "not JSON", "re-save")),
    ("offsets_beyond_file", "sanity", ("header lies", "data ends at byte", "re-save")),
    ("overlapping_offsets", "sanity", ("header", "overlapping", "re-save")),
    ("duplicate_tensor_name", "sanity", ("names tensor", "twice", "re-save")),
    # config
    ("unsupported_arch", "sanity", ("FooForCausalLM", "not supported", "LlamaForCausalLM")),
    ("broken_config", "sanity", ("config.json does not parse", "save it again")),
    ("config_bad_values", "sanity", ("num_hidden_layers", "at most 1,024")),
    ("short_context", "sanity", ("256 tokens", "max_position_embeddings", "max_input_tokens=192")),
    ("no_safetensors", "download", ("no weights", "safetensors")),
    # tokenizer and chat template
    ("no_tokenizer", "download", ("no tokenizer", "save_pretrained")),
    ("tokenizer_not_json", "sanity", ("tokenizer.json does not parse", "save it again")),
    ("tokenizer_unloadable", "sanity", ("tokenizer.json does not load", "save_pretrained")),
    ("no_chat_template", "sanity", ("no chat template", "chat_template")),
    ("template_syntax_error", "sanity", ("chat template", "syntax error", "line 1")),
    ("template_raises", "sanity", ("ordinary conversation", "must start with a system message")),
    ("template_forever", "sanity", ("did not finish", "within 5 s", "simplify the template")),
    ("template_huge_output", "sanity", ("too much text", "262144 characters")),
]


@pytest.mark.parametrize(("kind", "stage", "words"), HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hostile_model_from_the_hub(
    s3: Any,
    on_hub: Callable[[str], str],
    variant: Callable[[str], Path],
    hardening: Hardening,
    kind: str,
    stage: str,
    words: tuple[str, ...],
) -> None:
    source = on_hub(kind)

    report = _refused(s3, source)

    assert report.failed_stage == stage, report.reason
    _says(report.reason, words)
    if kind.startswith("pickle_payload"):
        assert not payload_marker(variant(kind)).exists(), "the pickle was unpickled"
    hardening.record(kind=kind, source="hub", stage=stage, reason=report.reason or "")


def test_payload_pickle_is_never_unpickled_even_when_pickles_are_allowed(
    s3: Any,
    on_hub: Callable[[str], str],
    variant: Callable[[str], Path],
    settings_env: Callable[..., None],
    hardening: Hardening,
) -> None:
    """With PADDOCK_ALLOW_PICKLE the file is fetched, but its opcodes are read, not run."""
    settings_env(PADDOCK_ALLOW_PICKLE="true")
    marker = payload_marker(variant("pickle_payload_only"))
    assert not marker.exists()

    report = _refused(s3, on_hub("pickle_payload_only"))

    assert report.failed_stage == "sanity"
    _says(report.reason, ("pytorch_model.bin", "builtins.exec", "would run code", "safetensors"))
    assert not marker.exists(), "the payload ran: the pickle was unpickled"
    hardening.record(
        kind="pickle_payload_only (pickles allowed)",
        source="hub",
        stage="sanity",
        reason=report.reason or "",
    )


# -- local directories: links, special files --------------------------------------------

LOCAL_CASES = [
    ("symlink_file_outside", ("tokenizer.json is a symbolic link", "outside", "cp -rL")),
    ("symlink_dir_outside", ("extra is a symbolic link", "never follows links")),
    ("fifo_file", ("generation_config.json is not a regular file", "remove it")),
]


@pytest.mark.parametrize(("kind", "words"), LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
def test_hostile_local_directory(
    s3: Any,
    on_local: Callable[[str], str],
    hardening: Hardening,
    kind: str,
    words: tuple[str, ...],
) -> None:
    source = on_local(kind)
    assert outside_path(Path(source)).exists() or kind == "fifo_file"

    report = _refused(s3, source)

    assert report.failed_stage == "download"
    _says(report.reason, words)
    hardening.record(kind=kind, source="local", stage="download", reason=report.reason or "")


def test_symlink_to_a_system_file_is_never_read(
    s3: Any, paddock_home: Path, tiny_model: Path, hardening: Hardening
) -> None:
    src = paddock_home / "sources" / "hostile" / "passwd-link"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(tiny_model, src)
    (src / "generation_config.json").unlink()
    (src / "generation_config.json").symlink_to("/etc/passwd")

    report = _refused(s3, str(src))

    assert report.failed_stage == "download"
    _says(report.reason, ("generation_config.json is a symbolic link", "/etc/passwd"))
    hardening.record(
        kind="symlink to /etc/passwd", source="local", stage="download", reason=report.reason or ""
    )


# -- S3 keys that climb out of the download directory -------------------------------------

S3_NAMES = [
    ("s3_name_dotdot", "../../escape.json"),
    ("s3_name_absolute", "/tmp/paddock-escape.json"),
]


@pytest.mark.parametrize(("kind", "name"), S3_NAMES, ids=[c[0] for c in S3_NAMES])
def test_s3_file_names_that_climb_out(
    s3: Any, tiny_model: Path, hardening: Hardening, kind: str, name: str
) -> None:
    url = upload_dir(s3, tiny_model, f"hostile/{kind}")
    # a key ending in the hostile name; with `prefix/` cut off it is `name`
    s3.client().put_object(Bucket="sources", Key=f"hostile/{kind}/{name}", Body=b"{}")
    escape = get_settings().work_dir / "escape.json"

    report = _refused(s3, url)

    assert report.failed_stage == "download"
    _says(report.reason, ("climbs out", "rename it"))
    assert not escape.exists() and not Path("/tmp/paddock-escape.json").exists()
    hardening.record(kind=kind, source="s3", stage="download", reason=report.reason or "")


def test_hub_file_names_that_climb_out() -> None:
    """git (and so the hub mirror) cannot hold such names; the listing check refuses them
    whatever the source, before any download."""
    from paddock.checks.files import SourceFile, check_listing

    for name in ("../config.json", "/etc/config.json", "a/../../b", "c\\..\\d", "x\x00y"):
        with pytest.raises(Rejected, match="climbs out"):
            check_listing(
                [SourceFile("config.json"), SourceFile(name)],
                patterns=["*"],
                allow_custom_code=False,
                allow_pickle=False,
                max_bytes=None,
            )


# -- limits: parameters and bytes, from every kind of source -------------------------------


@pytest.fixture
def on(
    on_hub: Callable[[str], str], on_s3: Callable[[str], str], on_local: Callable[[str], str]
) -> dict[str, Callable[[str], str]]:
    return {"hub": on_hub, "s3": on_s3, "local": on_local}


@pytest.mark.parametrize("where", ["hub", "s3", "local"])
def test_too_many_parameters(
    s3: Any,
    on: dict[str, Callable[[str], str]],
    settings_env: Callable[..., None],
    hardening: Hardening,
    where: str,
) -> None:
    source = on[where]("short_context")  # any good model; its context is not at stake here
    settings_env(PADDOCK_MAX_PARAMETERS="100000")

    report = _refused(s3, source, params={"max_input_tokens": 128, "max_output_tokens": 64})

    assert report.failed_stage == "sanity"
    _says(report.reason, ("532,352 parameters", "limit is 100,000", "PADDOCK_MAX_PARAMETERS"))
    hardening.record(
        kind="too many parameters", source=where, stage="sanity", reason=report.reason or ""
    )


@pytest.mark.parametrize("where", ["hub", "s3", "local"])
def test_too_many_bytes_refused_before_downloading(
    s3: Any,
    on: dict[str, Callable[[str], str]],
    settings_env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    hardening: Hardening,
    where: str,
) -> None:
    source = on[where]("short_context")
    fetched: list[Any] = []
    for name in ("_download_pinned", "_s3_get", "_copy_no_follow"):
        monkeypatch.setattr(sources, name, lambda *a, **k: fetched.append(a))
    settings_env(PADDOCK_MAX_MODEL_BYTES="1000000")

    report = _refused(s3, source, params={"max_input_tokens": 128, "max_output_tokens": 64})

    assert report.failed_stage == "download"
    _says(report.reason, ("the limit is 1.0 MB", "PADDOCK_MAX_MODEL_BYTES"))
    assert fetched == [], "the size is known from the listing: nothing may be fetched"
    hardening.record(
        kind="too many bytes (listed sizes)",
        source=where,
        stage="download",
        reason=report.reason or "",
    )


def test_too_many_bytes_when_the_listing_has_no_sizes(
    s3: Any,
    on_hub: Callable[[str], str],
    settings_env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    hardening: Hardening,
) -> None:
    listed = sources._hub_listing

    def without_sizes(*args: Any) -> list[sources.SourceFile]:
        return [sources.SourceFile(f.name) for f in listed(*args)]

    monkeypatch.setattr(sources, "_hub_listing", without_sizes)
    settings_env(PADDOCK_MAX_MODEL_BYTES="1000000")

    report = _refused(s3, on_hub("short_context"))

    assert report.failed_stage == "download"
    _says(report.reason, ("the limit is 1.0 MB", "PADDOCK_MAX_MODEL_BYTES"))
    hardening.record(
        kind="too many bytes (sizes not listed: checked after download)",
        source="hub",
        stage="download",
        reason=report.reason or "",
    )


# -- sources, revisions and parameters that are tricks -------------------------------------

SOURCE_TRICKS = ["../x", "a/b/c", "$(rm -rf /)", "org/name;rm -rf /", "-rf", "org/na\x00me"]


@pytest.mark.parametrize("source", SOURCE_TRICKS)
def test_source_tricks_refused_at_submit_and_in_the_flow(
    s3: Any, hardening: Hardening, source: str
) -> None:
    with pytest.raises(Rejected) as refused:
        draft(developer="hostile", source=source)
    _says(str(refused.value), ("source",))
    assert any(
        w in str(refused.value) for w in ("neither a hub repository id", "control characters")
    ), refused.value

    # a row that reached the flow without passing submit is refused before any fetch
    report = _refused(s3, source)
    assert report.failed_stage == "download"
    assert report.reason == str(refused.value)
    hardening.record(
        kind=f"source {source!r}", source="any", stage="submit", reason=str(refused.value)
    )


REVISION_TRICKS = ["../../etc", "main; rm -rf /", "$(id)", "-rf", "ma\x00in", "refs/../x"]


@pytest.mark.parametrize("revision", REVISION_TRICKS)
def test_revision_tricks(
    s3: Any, on_hub: Callable[[str], str], hardening: Hardening, revision: str
) -> None:
    report = _refused(s3, on_hub("short_context"), revision=revision)

    assert report.failed_stage == "download"
    _says(report.reason, ("is not a branch, tag or commit sha", "as the hub shows it"))
    hardening.record(
        kind=f"revision {revision!r}", source="hub", stage="download", reason=report.reason or ""
    )


PARAM_TRICKS = [
    {"temperature": -1},
    {"top_p": 2},
    {"temprature": 0.5},
    {"max_input_tokens": 100000},
]


@pytest.mark.parametrize("params", PARAM_TRICKS, ids=lambda p: next(iter(p)))
def test_invalid_generation_parameters(
    s3: Any, on_hub: Callable[[str], str], hardening: Hardening, params: dict[str, Any]
) -> None:
    source = on_hub("short_context")
    with pytest.raises(Rejected) as refused:
        draft(developer="hostile", source=source, generation_params=params)
    _says(str(refused.value), ("invalid generation parameters", next(iter(params))))

    report = _refused(s3, source, params=params)
    assert report.failed_stage == "download"
    assert report.reason == str(refused.value)
    hardening.record(
        kind=f"generation parameters {params}",
        source="any",
        stage="submit",
        reason=str(refused.value),
    )


def test_private_or_missing_repository(s3: Any, hardening: Hardening) -> None:
    """olah's offline mirror has no private repositories (or tokens); a private repo
    answers a client without a token exactly as a missing one does (401/404), so the
    sentence is the same and is tested with a repository that does not exist."""
    report = _refused(s3, "hostile/private-or-missing")

    assert report.failed_stage == "download"
    _says(report.reason, ("was not found", "if it is private", "token"))
    hardening.record(
        kind="private (or missing) repository, no token",
        source="hub",
        stage="download",
        reason=report.reason or "",
    )


def test_unknown_revision(s3: Any, on_hub: Callable[[str], str], hardening: Hardening) -> None:
    report = _refused(s3, on_hub("short_context"), revision="no-such-branch")

    assert report.failed_stage == "download"
    _says(report.reason, ("revision 'no-such-branch' does not exist", "existing branch"))
    hardening.record(
        kind="revision that does not exist",
        source="hub",
        stage="download",
        reason=report.reason or "",
    )


# -- accepted, but on the platform's terms --------------------------------------------------


def test_a_revision_moved_during_download_is_pinned(
    hub: Any,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hardening: Hardening,
) -> None:
    from huggingface_hub import HfApi

    from tasks.download import download

    repo = "hostile/moving-branch"
    first = hub.add_model(repo, tiny_model)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_model, moved)
    config = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "paddock_moved": True}))
    pushed: list[str] = []
    pinned_download = sources._download_pinned

    def push_then_download(repo_id: str, sha: str, *args: Any, **kwargs: Any) -> None:
        pushed.append(hub.add_model(repo, moved))  # main moves after it was resolved
        pinned_download(repo_id, sha, *args, **kwargs)

    monkeypatch.setattr(sources, "_download_pinned", push_then_download)
    sub = crud.create_submission(
        developer="hostile", source=repo, display_name="moving", requested_revision="main"
    )

    snapshot = download(sub.id)

    assert pushed and pushed[0] != first
    assert HfApi(endpoint=hub.endpoint).model_info(repo, revision="main").sha == pushed[0]
    assert snapshot.revision == first
    assert crud.require_submission(submission_id=sub.id).resolved_revision == first
    fetched = json.loads((snapshot.path / "config.json").read_text())
    assert "paddock_moved" not in fetched, "a file of the moved branch was fetched"
    shutil.rmtree(snapshot.path.parent)
    hardening.record(
        kind="branch moved between resolution and download",
        source="hub",
        stage="download",
        outcome="accepted",
        reason=f"fetched the commit main pointed to when resolved ({first[:12]}), "
        f"not the new head ({pushed[0][:12]})",
    )


def test_serving_limits_come_from_the_models_config(
    s3: Any, variant: Callable[[str], Path], tmp_path: Path, hardening: Hardening
) -> None:
    """A model built for 256 positions is served with --max-model-len 256, not the
    target's 2048; the target's max_model_len caps it; its dtype applies when forced."""
    from deployments.local import LocalBackend
    from paddock.contracts import StoredBundle
    from paddock.storage import bundle_manifest
    from tasks.deploy import build_spec

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = json.loads((variant("short_context") / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    (bundle / "model.tensors").write_bytes(b"not served here")
    manifest = bundle_manifest(bundle)
    store = use_local_store(tmp_path / "store").open()
    store.put_bundle(bundle, manifest)
    stored = StoredBundle(
        digest=manifest["digest"],
        uri=store.bundle_uri(manifest["digest"]),
        files=tuple(manifest["files"]),
        bytes=0,
        created=True,
    )
    sub = crud.create_submission(
        developer="hostile",
        source="org/short",
        display_name="short",
        generation_params={"max_input_tokens": 128, "max_output_tokens": 64},
    )
    backend = LocalBackend(python=Path(sys.executable), log_dir=tmp_path)

    def served(**target: Any) -> list[str]:
        use_serving(**target)
        return backend.command(build_spec(sub.id, stored), 8000)

    def flag(cmd: list[str], name: str) -> str:
        return cmd[cmd.index(name) + 1]

    try:
        default = served()
        capped = served(max_model_len=128)
        auto = served(dtype="auto")
    finally:
        use_s3_store(s3, PREFIX)
        use_serving()

    assert flag(default, "--max-model-len") == "256"
    assert flag(default, "--dtype") == "float32"  # the CPU target forces float32
    assert flag(capped, "--max-model-len") == "128"
    assert flag(auto, "--dtype") == "bfloat16"  # the config's torch_dtype
    hardening.record(
        kind="config max_position_embeddings 256 (platform default 2048)",
        source="any",
        stage="deploy",
        outcome="accepted",
        reason="served with --max-model-len 256 (the config's length, capped by the target's "
        "max_model_len) and the config's torch_dtype unless the target forces one",
    )


def test_an_s3_object_replaced_during_download_is_fetched_again(
    s3: Any,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    hardening: Hardening,
) -> None:
    """Each object is fetched only while its ETag is the listed one; a replaced object
    fails the attempt (transient), and the retry lists and pins the new content."""
    from tasks.download import download

    url = upload_dir(s3, tiny_model, "hostile/s3-replaced")
    key = "hostile/s3-replaced/generation_config.json"
    replaced: list[str] = []
    fetch = sources._s3_get

    def replace_then_fetch(client: Any, bucket: str, name: str, *args: Any) -> None:
        if name == key and not replaced:
            body = json.dumps({"do_sample": False, "paddock_replaced": True}).encode()
            s3.client().put_object(Bucket="sources", Key=key, Body=body)
            replaced.append(name)
        fetch(client, bucket, name, *args)

    monkeypatch.setattr(sources, "_s3_get", replace_then_fetch)
    sub = crud.create_submission(developer="hostile", source=url, display_name="replaced")

    snapshot = download(sub.id)

    attempts = [r.status for r in crud.stage_runs(submission_id=sub.id) if r.stage == "download"]
    assert [str(a) for a in attempts] == ["failed", "succeeded"]
    fetched = json.loads((snapshot.path / "generation_config.json").read_text())
    assert fetched["paddock_replaced"] is True, "the retry fetched what it listed"
    shutil.rmtree(snapshot.path.parent)
    hardening.record(
        kind="S3 object replaced during download",
        source="s3",
        stage="download",
        outcome="retried",
        reason="the first attempt failed (ETag no longer the listed one) and was retried; "
        "the retry listed, pinned and fetched the new content",
    )


# -- the template renderer, directly -------------------------------------------------------

GEMMA_LIKE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if loop.index0 > 99 %}{% break %}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% generation %}{{ message['content'] | trim }}{% endgeneration %}"
    "{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def _model_with_template(tmp_path: Path, template: str) -> Path:
    (tmp_path / "chat_template.jinja").write_text(template)
    return tmp_path


def test_real_world_template_features_are_accepted(tmp_path: Path) -> None:
    """loopcontrols, {% generation %}, raise_exception on a system message (as Gemma's
    template does): none of them is a reason to refuse."""
    from paddock.checks.template import check_chat_template

    check_chat_template(_model_with_template(tmp_path, GEMMA_LIKE), {"bos_token": "<bos>"})


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ messages[0]['content'] * 1000000000 }}", "more memory"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed without end"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "ordinary conversation"),
        ("{% for m in messages %}{{ m['role'] }}{% endfor %}", "leaves out the user's message"),
    ],
    ids=["memory", "recursion", "sandbox-escape", "drops-content"],
)
def test_template_bombs_and_escapes(tmp_path: Path, template: str, words: str) -> None:
    from paddock.checks.template import check_chat_template

    with pytest.raises(Rejected, match=words):
        check_chat_template(_model_with_template(tmp_path, template), {})
