"""Names and labels of a submission's Kubernetes objects.

Submission ids are arbitrary strings; Kubernetes names and label values are not. Every
mapping here is deterministic, so any process can find a deployment again from its id,
and every lossy mapping carries a hash of the original so two ids never collide.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "APP_NAME",
    "INSTANCE_LABEL",
    "SUBMISSION_LABEL",
    "label_value",
    "labels",
    "resource_name",
    "selector",
    "short_hash",
]

APP_NAME = "paddock-model"
MANAGED_BY = "paddock"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SUBMISSION_LABEL = "paddock.dev/submission"

_LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def resource_name(submission_id: str, *, prefix: str = "paddock", max_len: int = 45) -> str:
    """A DNS-1035 label for the submission's objects: `paddock-<id>`.

    Lower-case letters, digits and '-', starting with a letter. 45 characters leave room
    for the `-predictor` suffixes KServe derives, under the limit of 63.
    """
    raw = str(submission_id)
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", raw.lower())).strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    if slug != raw or len(name) > max_len:
        name = f"{name[: max_len - 9].rstrip('-')}-{short_hash(raw)}"
    return name


def label_value(value: str) -> str:
    """`value` if it is a valid label value, else a readable slug of it plus its hash."""
    if _LABEL_VALUE.fullmatch(value):
        return value
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")[:54].strip("-_.")
    return f"{slug}-{short_hash(value)}" if slug else short_hash(value)


def selector(name: str) -> dict[str, str]:
    """The labels that pick this submission's pods, and nothing else's."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: name}


def labels(name: str, submission_id: str) -> dict[str, str]:
    return {
        **selector(name),
        MANAGED_BY_LABEL: MANAGED_BY,
        SUBMISSION_LABEL: label_value(str(submission_id)),
    }
