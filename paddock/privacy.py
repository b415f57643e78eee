"""Keep people out of what paddock stores: users become keyed hashes, texts lose their PII.

A plain SHA-256 of a user id could be reversed by hashing every plausible id, so user ids
are HMAC'd with a secret; the secret outlives restarts (or every user would look new) and
lives in the environment or, by default, in a 0600 key file under the paddock home.

`scrub` is pattern-based. Presidio was left out because its recognisers need a spaCy
language model that the package registry only offers as unofficial uploads, and a privacy
filter must not depend on code of unknown provenance. Every pattern is linear in the input
(bounded or possessive quantifiers, anchored starts), so a megabyte-long message cannot
stall the chat path.

What is replaced, in this order:

- URLs: credentials in the userinfo (``user:pass@``) and the values of token-like query or
  fragment parameters become ``[redacted]``; the rest of the URL stays, because the host
  and path are what make feedback about a link understandable.
- e-mail addresses -> ``[email]``; IPv6 and IPv4 addresses -> ``[ip]``;
- payment card numbers (13-19 digits, optionally grouped by spaces or dashes) that pass the
  Luhn check -> ``[card]``, so order numbers and other digit runs survive;
- phone numbers that libphonenumber finds with strict grouping (`paddock.phones`) ->
  ``[phone]``; strict grouping keeps years, counts and lists of small numbers intact.

Placeholders hold no digits, ``@`` or ``:``, so they are never mistaken for PII themselves.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from paddock.config import get_settings
from paddock.errors import ConfigurationError
from paddock.phones import PhoneFinder

__all__ = ["SENSITIVE_PARAMS", "hash_user", "scrub"]

KEY_FILE = "user-hash.key"

# Query/fragment parameter names, or name parts ("x-amz-signature", "client_secret").
SENSITIVE_PARAMS = frozenset(
    {
        "token", "access_token", "refresh_token", "id_token", "api_key", "apikey", "key",
        "secret", "password", "passwd", "pwd", "sig", "signature", "auth", "authorization",
        "session", "sessionid", "session_id", "credential", "credentials", "jwt",
    }
)  # fmt: skip


# ------------------------------------------------------------------------------ user hash


def hash_user(user_id: str) -> str:
    """HMAC-SHA256 of the user id (hex): stable per secret, useless without it."""
    return hmac.new(_secret(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _secret() -> bytes:
    settings = get_settings()
    if settings.user_hash_secret is not None:
        value = settings.user_hash_secret.get_secret_value()
        if not value:
            raise ConfigurationError("PADDOCK_USER_HASH_SECRET is set but empty.")
        return value.encode("utf-8")
    return _key_file_secret(settings.home / KEY_FILE)


@functools.cache
def _key_file_secret(path: Path) -> bytes:
    return load_or_create_key(path)


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it first if needed.

    The new key is written whole to a private temporary file and then hard-linked into
    place; a link never replaces an existing file, so when processes race exactly one key
    wins and every racer reads that one.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        # Regenerating would silently re-key every user, so refuse instead.
        raise ConfigurationError(f"{path} does not hold a hex key; restore it or remove it.")
    return key


# ---------------------------------------------------------------------------------- scrub
# Python's regex engine only skips ahead quickly when a pattern starts with a literal or a
# character class, so each pattern below starts from its rarest sure sign ("://", "@", a
# colon pair, a digit) and looks back from there: a megabyte of prose costs milliseconds.

_URL = re.compile(
    r"://(?:(?<=https://)|(?<=http://)|(?<=ftps://)|(?<=ftp://)|(?<=wss://)|(?<=ws://))"
    r"[^\s<>\"'`{}|\\^]++",
    re.IGNORECASE,
)
_URL_PARTS = re.compile(r"://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?P<rest>.*)", re.DOTALL)
_PARAM_SPLIT = re.compile(r"([?&;#])")
_NAME_PARTS = re.compile(r"[^a-z0-9]+")

_EMAIL_DOMAIN = re.compile(r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.){1,10}[^\W\d_]{2,63}(?![\w\-])")
_EMAIL_LOCAL_PUNCTUATION = frozenset("._%+-_")  # besides letters and digits

_IPV6_ANCHOR = re.compile(r":(?=[0-9A-Fa-f]{0,4}:)")
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?:\.[0-9]{1,3}){0,3}"
    r"(?:%[0-9A-Za-z]{1,16})?(?![0-9A-Za-z])"
)
_IPV6_CUTS = re.compile(r"(?=[:.%])")
_HEX = frozenset("0123456789abcdefABCDEF")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?=[0-9])(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.[0-9])")

# A card starts with a group of 3+ digits followed, within single spaces or dashes, by at
# least 10 more digits. 64 characters hold more than the 19 digits a card can have.
_CARD_START = re.compile(r"\d(?<!\d\d)\d\d(?=(?:[ \-]?\d){10})")
_CARD_RUN = re.compile(r"\d++(?:[ \-]\d++)*+")
_CARD_REACH = 64
_CARD_SEPARATOR = re.compile(r"[ \-]")

_MAX_PASSES = 8


def scrub(text: str) -> str:
    """Replace personal data in `text` by placeholders (see the module docstring).

    A placeholder can give a neighbour the boundary it lacked ("x.y+44 20 7946 0958(415)
    555-2671" only shows its second number once the first is gone), so passes repeat
    until nothing changes: that is what makes scrubbing idempotent. A pass only ever
    replaces PII by placeholders, so this ends; clean text takes one pass, most others two.
    """
    phones = PhoneFinder()
    for _ in range(_MAX_PASSES):
        scrubbed = _scrub_once(text, phones)
        if scrubbed == text:
            break
        text = scrubbed
    return text


def _scrub_once(text: str, phones: PhoneFinder) -> str:
    if "://" in text:
        text = _URL.sub(_scrub_url, text)
    if "@" in text:
        text = _replace(text, _email_spans(text), "[email]")
    if ":" in text:
        text = _replace(text, _ipv6_spans(text), "[ip]")
    text = _IPV4.sub("[ip]", text)
    text = _replace(text, _card_spans(text), "[card]")
    return _replace(text, phones.spans(text), "[phone]")


def _replace(text: str, spans: Iterator[tuple[int, int]], placeholder: str) -> str:
    """Replace ordered, disjoint spans of `text` by `placeholder`."""
    out: list[str] = []
    copied = 0
    for start, end in spans:
        out += [text[copied:start], placeholder]
        copied = end
    if not out:
        return text
    out.append(text[copied:])
    return "".join(out)


# URLs ------------------------------------------------------------------------------------


def _scrub_url(match: re.Match[str]) -> str:
    # The match starts at "://": the scheme before it needs no change.
    url = match.group()
    tail = ""
    # Sentence punctuation after a link is not part of it.
    while url and (url[-1] in ".,;:!?'\"" or (url[-1] == ")" and url.count(")") > url.count("("))):
        tail = url[-1] + tail
        url = url[:-1]
    parts = _URL_PARTS.fullmatch(url)
    if parts is None:
        return match.group()
    authority = parts["authority"]
    if "@" in authority:
        authority = "[redacted]@" + authority.rpartition("@")[2]
    rest = parts["rest"]
    if rest:
        rest = "".join(_redact_param(piece) for piece in _PARAM_SPLIT.split(rest))
    return "://" + authority + parts["path"] + rest + tail


def _redact_param(piece: str) -> str:
    # A piece is "name=value", a bare word or a separator ("?", "&", ";", "#").
    name, eq, value = piece.partition("=")
    if not eq or not value:
        return piece
    normalized = name.lower()
    if normalized in SENSITIVE_PARAMS or any(
        part in SENSITIVE_PARAMS for part in _NAME_PARTS.split(normalized)
    ):
        return f"{name}=[redacted]"
    return piece


# E-mail addresses ------------------------------------------------------------------------


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    done = 0
    at = text.find("@")
    while at >= 0:
        start = at
        floor = max(done, at - 64)  # a local part has at most 64 characters
        while start > floor and (
            text[start - 1].isalnum() or text[start - 1] in _EMAIL_LOCAL_PUNCTUATION
        ):
            start -= 1
        domain = _EMAIL_DOMAIN.match(text, at + 1) if start < at else None
        if domain is not None:
            yield start, domain.end()
            done = domain.end()
        at = text.find("@", max(at + 1, done))


# IP addresses ----------------------------------------------------------------------------


def _ipv6_spans(text: str) -> Iterator[tuple[int, int]]:
    done = 0
    for anchor in _IPV6_ANCHOR.finditer(text):
        # An address has at most 4 hex digits before its first colon.
        start = anchor.start()
        while start > max(done, anchor.start() - 5) and text[start - 1] in _HEX:
            start -= 1
        if start < done:
            continue
        candidate = _IPV6_CANDIDATE.match(text, start)
        if candidate is None:
            continue
        length = _ipv6_length(candidate.group())
        if length:
            yield start, start + length
            done = start + length


def _ipv6_length(candidate: str) -> int:
    """Length of the longest IPv6 address at the start of `candidate` (which may run on
    into a port or punctuation), or 0."""
    if "::" not in candidate and candidate.count(":") < 6:
        return 0  # eight groups, or six and an IPv4 tail, unless "::" stands for some
    # An address holds at most one "::": nothing from a second one on can belong to it.
    limit = candidate.find("::", candidate.find("::") + 1)
    limit = len(candidate) if limit < 0 else limit
    cuts = [m.start() for m in _IPV6_CUTS.finditer(candidate, 0, limit)]
    for end in [limit, *reversed(cuts)]:
        address = candidate[:end]
        if sum(1 for group in address.split(":") if group) < 2:
            break  # "::1"-like fragments and code slices ("a[::2]") are left alone
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            continue
        return end
    return 0


# Payment cards ---------------------------------------------------------------------------


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    done = 0
    for start_match in _CARD_START.finditer(text):
        start = start_match.start()
        if start < done:
            continue
        run = _CARD_RUN.match(text, start, start + _CARD_REACH)
        end = _card_length(run.group()) if run else 0
        if end:
            yield start, start + end
            done = start + end


def _card_length(run: str) -> int:
    """Length of the longest Luhn-valid card number at the start of `run`, or 0.

    The number is made of whole groups ("4111 1111 1111 1111 123" is a card and a CVV):
    cutting through a group would mine long digit runs for lucky Luhn hits.
    """
    best = digits = plain = doubled = end = 0
    for group in _CARD_SEPARATOR.split(run):
        length = len(group)
        digits += length
        if digits > 19:
            break
        end += length
        # Appending a group shifts the digits before it by `length` positions.
        p, q = _luhn_sums(group)
        if length % 2:
            plain, doubled = p + doubled, q + plain
        else:
            plain, doubled = p + plain, q + doubled
        if digits >= 13 and plain % 10 == 0:
            best = end
        end += 1  # the separator
    return best


@functools.lru_cache(maxsize=4096)
def _luhn_sums(group: str) -> tuple[int, int]:
    """Luhn sums of a digit group with its last digit undoubled, and with it doubled."""
    plain = doubled = 0
    for i, ch in enumerate(reversed(group)):
        d = int(ch)
        d2 = d * 2 - 9 if d > 4 else d * 2
        plain += d2 if i % 2 else d
        doubled += d if i % 2 else d2
    return plain, doubled
