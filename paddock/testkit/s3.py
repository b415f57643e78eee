"""A real S3 HTTP endpoint on 127.0.0.1: moto's ``ThreadedMotoServer``.

Why: paddock writes serialized weights (tensorizer) to object storage and vLLM
streams them back through presigned URLs. Tests need the real S3 wire protocol
(SigV4, multipart, presigning) rather than an in-process mock, so that boto3,
tensorizer's HTTP streaming and ``curl`` all talk to the same server.

Behaviour worth knowing (moto 5.2):

* Starts in ~0.4 s on a thread of the current process.
* Multipart upload enforces the 5 MiB minimum for every part but the last.
* Presigned URLs are accepted without checking the signature.
* State lives in moto's process-global backends: two servers in one process see the
  same buckets. Use distinct bucket names per test (or :meth:`S3Server.reset`).
* tensorizer's S3 streaming needs ``force_http=True`` for an ``http://`` endpoint,
  and the ``curl`` binary.

Nothing global is set: credentials and endpoint are passed explicitly, via
:meth:`S3Server.client` or :meth:`S3Server.env` for a subprocess.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import httpx

from paddock.testkit.ports import free_port, wait_for_port
from paddock.testkit.server import LocalServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # pragma: no cover
else:
    S3Client = Any

__all__ = ["S3Server"]

REGION: Final = "us-east-1"


class S3Server(LocalServer):
    """moto's S3 on ``127.0.0.1:<free port>``, as a context manager.

    ::

        with S3Server() as s3:
            s3.create_bucket("models")
            s3.client().put_object(Bucket="models", Key="a", Body=b"x")
    """

    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = REGION

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` — pass as ``endpoint_url``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Start the server thread and wait until it accepts connections."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        # One access-log line per request would drown benchmark and demo output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        try:
            wait_for_port(self.port, timeout=20)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Shut the server thread down (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def reset(self) -> None:
        """Drop every bucket and object (moto's ``/moto-api/reset``; process-wide)."""
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()

    def client(self, **kwargs: Any) -> S3Client:
        """A boto3 S3 client bound to this server with the dummy credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            **kwargs,
        )

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (no-op if it exists already); return it."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def env(self) -> dict[str, str]:
        """Environment for a child process using boto3/AWS-CLI conventions."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    @property
    def running(self) -> bool:
        return self._server is not None
