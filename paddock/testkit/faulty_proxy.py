"""A real HTTP proxy in front of a real local server (olah, moto) that misbehaves on cue.

Why: retries and clean-up after a network fault can only be trusted if the fault is a
real one on a real socket — a 503 from "the hub" in the middle of a download, a
connection cut after so many bytes of an upload part, a port that refuses connections for
a few seconds. Mocks of the clients would test the mocks.

Each client connection carries one request: the proxy reads the request head, decides
whether a fault applies, and otherwise forwards it with ``Connection: close`` so the next
request comes on a new connection the proxy sees too (a keep-alive connection would
let later requests slip past a fault armed meanwhile). Bytes are then piped both ways and
counted per request, so a test can tell a resumed download from one fetched twice.

::

    with FaultyProxy("127.0.0.1", hub.port) as proxy:
        proxy.cut(path="model.safetensors", after_down=1 << 20)  # drop it after 1 MiB
        proxy.answer(503, path="model.safetensors", times=2)     # then two 503s
        ...
        proxy.refuse(seconds=5)                                  # nothing listens
        proxy.hold(path="model.tensors"); proxy.holding.wait()   # a client is mid-call
        proxy.release()
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from paddock.testkit.ports import free_port
from paddock.testkit.server import LocalServer

__all__ = ["FaultyProxy", "Exchange"]

_HEAD_LIMIT = 64 * 1024


@dataclass
class Exchange:
    """One request through the proxy and what became of it."""

    method: str
    target: str
    bytes_up: int = 0  # client → server, body and head
    bytes_down: int = 0  # server → client
    fault: str = ""  # "", "503", "cut", …
    range: str = ""  # the request's Range header: a client resuming asks for the rest


@dataclass
class _Rule:
    kind: str  # "status" | "cut" | "hold"
    method: str | None
    path: str | None
    times: int
    status: int = 503
    after_up: int | None = None
    after_down: int | None = None
    then_refuse: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        return (
            self.times > 0
            and (self.method is None or self.method == method)
            and (self.path is None or self.path in target)
        )


@dataclass
class FaultyProxy(LocalServer):
    """``http://127.0.0.1:<port>`` forwarding to ``upstream_host:upstream_port``."""

    upstream_host: str
    upstream_port: int
    port: int = field(default_factory=free_port)
    exchanges: list[Exchange] = field(default_factory=list)
    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _refusing_until: float = 0.0
    _stopped: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    holding: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults ------------------------------------------------------------------------

    def answer(
        self, status: int, *, path: str | None = None, method: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (empty body)."""
        with self._lock:
            self._rules.append(_Rule("status", method, path, times, status=status))

    def cut(
        self,
        *,
        path: str | None = None,
        method: str | None = None,
        after_up: int | None = None,
        after_down: int | None = None,
        times: int = 1,
        then_refuse: float = 0.0,
    ) -> None:
        """Reset the next ``times`` matching requests' connections once that many bytes
        went up (request body) or down (response) through them; with ``then_refuse``, the
        endpoint then goes away (refuses connections) for that many seconds."""
        with self._lock:
            self._rules.append(
                _Rule(
                    "cut",
                    method,
                    path,
                    times,
                    after_up=after_up,
                    after_down=after_down,
                    then_refuse=then_refuse,
                )
            )

    def hold(self, *, path: str | None = None, method: str | None = None) -> None:
        """Keep the next matching request waiting (nothing forwarded) until ``release``;
        ``holding`` is set once one waits — a test's cue that the client is mid-call."""
        with self._lock:
            self._rules.append(_Rule("hold", method, path, 1))

    def release(self) -> None:
        self._released.set()

    def refuse(self, seconds: float) -> None:
        """Close the listening socket: connections are refused for ``seconds``."""
        with self._lock:
            self._refusing_until = time.monotonic() + seconds
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._refusing_until = 0.0

    def served(self, path: str) -> list[Exchange]:
        """Every request whose target contains ``path``, in arrival order."""
        with self._lock:
            return [e for e in self.exchanges if path in e.target]

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> FaultyProxy:
        self._listen()
        self._thread = threading.Thread(target=self._serve, name="faulty-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._released.set()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.1)
        with self._lock:
            self._listener = sock

    def _serve(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener, refusing = self._listener, self._refusing_until
            if listener is None:
                if time.monotonic() < refusing:
                    time.sleep(0.02)
                    continue
                self._listen()
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    # -- one request -------------------------------------------------------------------

    def _handle(self, client: socket.socket) -> None:
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            method, target, rewritten = _rewrite(head)
            exchange = Exchange(
                method, target, bytes_up=len(head) + len(rest), range=_header(head, "range")
            )
            rule = self._take_rule(method, target)
            with self._lock:
                self.exchanges.append(exchange)
            if rule is not None and rule.kind == "hold":
                exchange.fault = "held"
                self.holding.set()
                self._released.wait()
            if rule is not None and rule.kind == "status":
                exchange.fault = str(rule.status)
                client.sendall(
                    f"HTTP/1.1 {rule.status} Injected Fault\r\nContent-Length: 0\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                return
            upstream = socket.create_connection((self.upstream_host, self.upstream_port))
            try:
                upstream.sendall(rewritten + rest)
                self._pipe(client, upstream, exchange, rule)
            finally:
                upstream.close()
        except OSError:
            pass
        finally:
            _close(client)

    def _take_rule(self, method: str, target: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    rule.times -= 1
                    return rule
        return None

    def _after_cut(self, rule: _Rule) -> None:
        if rule.then_refuse > 0:
            self.refuse(rule.then_refuse)

    def _pipe(
        self, client: socket.socket, upstream: socket.socket, ex: Exchange, rule: _Rule | None
    ) -> None:
        """Both directions until the server closes (it was told to), or a cut."""
        cut = threading.Event()

        def up() -> None:
            try:
                while not cut.is_set() and (data := client.recv(65536)):
                    if (
                        rule
                        and rule.after_up is not None
                        and ex.bytes_up + len(data) > rule.after_up
                    ):
                        keep = max(rule.after_up - ex.bytes_up, 0)
                        upstream.sendall(data[:keep])
                        ex.bytes_up += keep
                        ex.fault = "cut"
                        cut.set()
                        self._after_cut(rule)
                        _reset(client)
                        _reset(upstream)
                        return
                    upstream.sendall(data)
                    ex.bytes_up += len(data)
            except OSError:
                pass

        sender = threading.Thread(target=up, daemon=True)
        sender.start()
        try:
            while not cut.is_set() and (data := upstream.recv(65536)):
                if (
                    rule
                    and rule.after_down is not None
                    and ex.bytes_down + len(data) > rule.after_down
                ):
                    keep = max(rule.after_down - ex.bytes_down, 0)
                    client.sendall(data[:keep])
                    ex.bytes_down += keep
                    ex.fault = "cut"  # the body ends early: the client sees EOF mid-body
                    self._after_cut(rule)
                    break
                client.sendall(data)
                ex.bytes_down += len(data)
        except OSError:
            pass
        cut.set()
        _close(client)
        sender.join(5)


def _read_head(client: socket.socket) -> tuple[bytes | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = client.recv(65536)
        if not data or len(buf) > _HEAD_LIMIT:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _rewrite(head: bytes) -> tuple[str, str, bytes]:
    """The request line's method and target, and the head with ``Connection: close``."""
    lines = head.decode("latin-1").split("\r\n")
    method, target = (lines[0].split(" ") + ["", ""])[:2]
    kept = [
        line
        for line in lines[1:]
        if line and not line.lower().startswith(("connection:", "keep-alive:"))
    ]
    text = "\r\n".join([lines[0], *kept, "Connection: close", "", ""])
    return method, target, text.encode("latin-1")


def _header(head: bytes, name: str) -> str:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def _close(sock: socket.socket) -> None:
    """Close after everything sent has gone out (FIN, not RST)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a reset, as when a link drops."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
