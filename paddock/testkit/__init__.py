"""Real local servers and models for the test suite, the benchmarks and ``make demo``.

Everything speaks the real protocol on 127.0.0.1; nothing here touches global state or
the network beyond PyPI.

* :mod:`paddock.testkit.ports` — ``free_port()``.
* :mod:`paddock.testkit.tiny_model` — ``build_tiny_llama()``, ``make_variant()``.
* :mod:`paddock.testkit.hub` — ``HubMirror`` (olah serving local git repositories).
* :mod:`paddock.testkit.s3` — ``S3Server`` (moto).
* :mod:`paddock.testkit.postgres` — ``PostgresServer`` (Debian's binaries).
* :mod:`paddock.testkit.smollm2` — ``prepare_smollm2()`` (real model, offline).

Submodules are imported explicitly so that importing one server does not pull in
torch/transformers.
"""
