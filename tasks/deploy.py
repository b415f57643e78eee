"""Stage 5: start serving the bundle on the configured backend."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from blocks import ModelStore, model_store, serving_target
from deployments import ServeSpec
from deployments.refusals import refusal_in
from paddock import crud
from paddock.bundle import SIDE_FILES, work_bundle_dir
from paddock.checks.config import read_json, serving_limits
from paddock.config import get_settings
from paddock.contracts import Bundle, Endpoint, StoredBundle
from paddock.errors import BackendError, IllegalTransition, ModelRefused, PaddockError
from paddock.models import Status
from paddock.params import GenerationParams
from paddock.serving import current_backend, stop_serving
from paddock.storage import bundle_manifest
from tasks.stage import stage

__all__ = ["deploy", "build_spec", "maps_run_copy", "own_copy"]


def _serving(submission_id: str, endpoint: Endpoint) -> bool:
    dep = crud.active_deployment(submission_id=submission_id)
    if dep is None or dep.endpoint != endpoint.url:
        return False
    return current_backend().status(dep.handle) == "ready"


def maps_run_copy() -> bool:
    """Whether a server deployed now maps the bundle its run serialized on this machine
    rather than reading the store: a local server, an S3 store it would otherwise stream
    from, and the target's ``local_copy`` on. Then deploy needs nothing the upload makes,
    and the flow runs the upload beside it.

    Not with a local store: copying into it is short (SmolLM2: 4 s, against 10 s to
    moto), and in front of deploy it is time the server's head start spends importing
    vLLM anyway; beside deploy, deploy waited that much longer for those imports
    (SmolLM2, side by side: serialize's start to deploy's end 18.3 s against 18.9 s, no
    gain to show for the extra concurrency)."""
    target = serving_target()
    return target.backend == "local" and target.local_copy and model_store().is_s3


def build_spec(submission_id: str, source: Bundle | StoredBundle) -> ServeSpec:
    """What to serve and how, from the bundle, the model's config and the target.

    The context length and dtype come from the model's own config.json: the target's
    ``max_model_len`` is a cap (a model built for 256 tokens is served with 256, not a
    platform default it cannot meet) and its ``dtype`` applies only when it forces one
    (``auto`` defers to the config's ``torch_dtype``; float32 is forced on CPU).

    ``source`` is the bundle this run serialized (`maps_run_copy`: the server maps it,
    the same bytes the upload beside it stores, with no keys) or the stored bundle. A
    local server given the stored bundle still maps the run's copy when it is here and
    hashes to the stored digest (for SmolLM2 on moto, about 5 s of weight load against
    0.4 s); otherwise — a redeploy on another machine, a cleaned work dir, the target's
    ``local_copy`` off — the tensors stream from S3.
    """
    sub = crud.require_submission(submission_id=submission_id)
    store_block = model_store()
    target = serving_target()
    if isinstance(source, Bundle):
        bundle_uri, config_dir, streamed = f"{source.path}/", source.path, False
        config_files = tuple(f for f in SIDE_FILES if (source.path / f).is_file())
        config = read_json(source.path / "config.json")
    else:
        config_files = tuple(f for f in source.files if f in SIDE_FILES)
        bundle_uri, config_dir, streamed = source.uri, None, store_block.is_s3
        if store_block.is_s3 and target.backend == "local":
            config_dir = own_copy(submission_id, source) if target.local_copy else None
            if config_dir is not None:
                bundle_uri, streamed = f"{config_dir}/", False
            else:
                # vLLM reads config and tokenizer from a local --model directory; only the
                # tensors stream from S3.
                config_dir = store_block.open().fetch(
                    source.digest,
                    list(config_files),
                    get_settings().work_dir / submission_id / "serve-config",
                )
        config = _model_config(store_block, source, config_dir)
    max_model_len, dtype = serving_limits(config, cap=target.max_model_len, dtype=target.dtype)
    return ServeSpec(
        submission_id=submission_id,
        served_name=sub.display_name,
        bundle_uri=bundle_uri,
        config_files=config_files,
        local_config_dir=config_dir if streamed else None,
        s3_endpoint=store_block.endpoint_url if streamed else None,
        dtype=dtype,
        max_model_len=max_model_len,
        env=_s3_env(store_block) if streamed and target.backend == "local" else {},
        generation_defaults=GenerationParams(**sub.generation_params).serving_defaults(),
    )


def own_copy(submission_id: str, stored: StoredBundle) -> Path | None:
    """The bundle this submission serialized on this machine, if it is byte for byte the
    stored one (every file's sha256, as the store's digest covers them)."""
    local = work_bundle_dir(submission_id)
    if not (local / "model.tensors").is_file():
        return None
    try:
        digest = bundle_manifest(local)["digest"]
    except (OSError, PaddockError):
        return None  # changing under us (a re-serialize): the store's copy is the one
    return local if digest == stored.digest else None


def _model_config(
    store_block: ModelStore, stored: StoredBundle, local_config_dir: Path | None
) -> dict[str, Any]:
    """The bundle's config.json, from the copy already fetched or straight from the store."""
    if local_config_dir is not None:
        return read_json(local_config_dir / "config.json")
    with tempfile.TemporaryDirectory(prefix="paddock-config-") as tmp:
        fetched = store_block.open().fetch(stored.digest, ["config.json"], Path(tmp))
        return read_json(fetched / "config.json")


def _s3_env(store_block: ModelStore) -> dict[str, str]:
    if not store_block.access_key_id or not store_block.secret_access_key:
        return {}
    return {
        "S3_ACCESS_KEY_ID": store_block.access_key_id,
        "S3_SECRET_ACCESS_KEY": store_block.secret_access_key.get_secret_value(),
        **({"S3_ENDPOINT_URL": store_block.endpoint_url} if store_block.endpoint_url else {}),
    }


def _still_deploying(submission_id: str) -> None:
    status = crud.require_submission(submission_id=submission_id).status
    if status != Status.deploying:
        raise IllegalTransition(
            f"submission {submission_id} became {status} while its server was starting; "
            "the server was stopped"
        )


@stage("deploy", retries=1, still_valid=_serving)
def deploy(submission_id: str, bundle: Bundle | StoredBundle) -> Endpoint:
    stop_serving(submission_id)  # a previous attempt's leftovers
    target = serving_target()
    backend = current_backend()
    spec = build_spec(submission_id, bundle)
    handle = backend.start(spec)
    dep_id = crud.record_deployment(
        submission_id=submission_id, backend=target.backend, endpoint=None, handle=handle
    )
    try:
        # Recorded first, checked second: a deactivation or teardown that changed the
        # status before this check is seen here; one after it finds the record and stops
        # this server itself. Either way no server outlives the stop.
        _still_deploying(submission_id)
        url = backend.wait_ready(handle, timeout=target.ready_timeout_s)
        _still_deploying(submission_id)
    except BaseException as exc:
        backend.stop(handle)
        crud.close_deployment(deployment_id=dep_id)
        if isinstance(exc, BackendError):
            _still_deploying(submission_id)  # a stop, not a failure: nothing to retry
        reason = refusal_in(exc.log_tail) if isinstance(exc, BackendError) else None
        if reason is not None:  # the same config is refused on every attempt: no retry
            raise ModelRefused(f"vLLM refused the model: {reason}") from exc
        raise
    crud.set_deployment_endpoint(deployment_id=dep_id, endpoint=url)
    return Endpoint(url=url, backend=target.backend, model=spec.served_name)
