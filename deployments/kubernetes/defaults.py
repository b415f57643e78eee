"""The values a Kubernetes serving target uses unless an operator says otherwise.

The backend's constructor and the serving-target block both take their defaults from
here, so a target created in the UI and a backend built in code agree.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_IMAGE",
    "DEFAULT_MAX_REPLICAS",
    "DEFAULT_MIN_REPLICAS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_S3_SECRET_NAME",
    "VLLM_BASE_IMAGE",
    "DEFAULT_WAITING_PER_REPLICA",
    "VLLM_VERSION",
]

# The serving image is built by serving/Containerfile: FROM the pinned vLLM image plus
# paddock's plugin. Its tag says which vLLM it carries.
VLLM_VERSION = "v0.32.0"
VLLM_BASE_IMAGE = f"vllm/vllm-openai:{VLLM_VERSION}"
DEFAULT_IMAGE = f"paddock-serving:vllm-{VLLM_VERSION}"

DEFAULT_NAMESPACE = "paddock"
# The one Secret per namespace holding the model store's S3 keys (see `secret.py`).
DEFAULT_S3_SECRET_NAME = "paddock-model-store"
# The serving image's HOME. The pod sets HOME explicitly and mounts ~/.s3cfg under it,
# so the place tensorizer looks for credentials never depends on the image's defaults.
DEFAULT_HOME = "/home/vllm"

# One replica per model and no autoscaler unless an operator raises max_replicas: an HPA
# needs a custom-metrics adapter that not every cluster has. min_replicas=1 also means
# paddock never parks a model at zero replicas unless the operator allows it with 0.
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 1
# The HPA's target: requests waiting in vLLM's queue per replica, on average. A queue means
# the replica's batch (KV cache) is full, so more waiting requests mean users wait longer.
DEFAULT_WAITING_PER_REPLICA = 2.0
