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
- phone numbers that libphonenumber finds with strict grouping for any of
  `PHONE_REGIONS` -> ``[phone]``; strict grouping keeps years, counts and lists of small
  numbers ("1 2 3 4 5 6 7 8 9 10") intact.

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

from phonenumbers import Leniency, PhoneNumberMatcher

from paddock.config import get_settings
from paddock.errors import ConfigurationError

__all__ = ["PHONE_REGIONS", "SENSITIVE_PARAMS", "hash_user", "scrub"]

KEY_FILE = "user-hash.key"

# Regions whose national formats (no "+country" prefix) are recognised.
PHONE_REGIONS = ("US", "GB")

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

# Runs of 7+ digits joined by phone punctuation, not glued to a Latin word on the left.
_PHONE_SEPARATORS = r"[ ().\-/\u00a0]{0,3}"
_PHONE_RUN = re.compile(
    rf"(?=[+(\d])(?<![A-Za-z0-9_])[+(]?\d(?=(?:{_PHONE_SEPARATORS}\d){{6}})"
    rf"(?:{_PHONE_SEPARATORS}\d)*+"
)
_PHONE_GROUP = re.compile(r"[+(]?\d+")
_GROUP_START = re.compile(r"(?<![\d+(])[+(]?\d")
_LATIN_WORD = re.compile(r"[A-Za-z0-9_]")
# A date, perhaps with the hour after it, as in log lines ("2025-01-17 14:16:00").
_DATE = re.compile(
    r"(?:[12]\d{3}[-/.][01]?\d[-/.][0-3]?\d|[0-3]?\d[-/.][01]?\d[-/.][12]\d{3})(?: [0-2]?\d)?"
)
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 17  # 15 (E.164) plus a trunk prefix or a written country code
_MAX_PHONE_GROUPS = 6  # "+33 1 23 45 67 89"
# Long runs are read through overlapping windows so that libphonenumber's cost per call
# stays bounded; any number up to _STEP characters long lies wholly inside one window.
_WINDOW = 80
_STEP = 32
# libphonenumber needs up to ~10 us per character of digit-dense text: past this many
# characters checked (~0.3 s) in one message, runs that could hold a phone number are
# redacted unchecked. Ordinary chat messages come nowhere near it.
_PHONE_CHECK_CHARS = 32_000
_PHONE_CACHE_SIZE = 4096
_MAX_PASSES = 8


def scrub(text: str) -> str:
    """Replace personal data in `text` by placeholders (see the module docstring).

    A placeholder can give a neighbour the boundary it lacked ("x.y+44 20 7946 0958(415)
    555-2671" only shows its second number once the first is gone), so passes repeat
    until nothing changes: that is what makes scrubbing idempotent. A pass only ever
    replaces PII by placeholders, so this ends; clean text takes one pass, most others two.
    """
    phones = _PhoneFinder()
    for _ in range(_MAX_PASSES):
        scrubbed = _scrub_once(text, phones)
        if scrubbed == text:
            break
        text = scrubbed
    return text


def _scrub_once(text: str, phones: _PhoneFinder) -> str:
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


# Phone numbers ---------------------------------------------------------------------------

# Shared across messages: libphonenumber's spans per text, and the finder's per run.
_checked: dict[str, tuple[tuple[int, int], ...]] = {}
_resolved: dict[tuple[str, int | None], list[tuple[int, int]]] = {}


class _PhoneFinder:
    """Phone numbers in one message, found by libphonenumber within a budget.

    libphonenumber is the judge of what is a phone number, but a megabyte of nothing but
    digit runs would keep it busy for seconds. Checks are cached across messages and
    their text is counted per message; once `_PHONE_CHECK_CHARS` are spent, a run that
    could still hold a number is redacted unchecked (dates excepted): the budget costs
    utility on pathological input, never privacy. Verdicts are kept for the whole
    message, so every pass of `scrub` judges a run the same way.
    """

    def __init__(self) -> None:
        self.chars_left = _PHONE_CHECK_CHARS
        self.verdicts: dict[str, tuple[tuple[int, int], ...]] = {}

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        for match in _PHONE_RUN.finditer(text):
            run = match.group()
            if match.end() < len(text) and _LATIN_WORD.match(text, match.end()):
                # "... 2671 10am": the last group belongs to a word, not to the number.
                run = run[: _last_group_start(run)].rstrip(" ().-/\u00a0")
                if sum(map(str.isdigit, run)) < _MIN_PHONE_DIGITS:
                    continue
            found = self._in_run(run) if len(run) <= _WINDOW else self._in_long_run(run)
            for start, end in found:
                yield match.start() + start, match.start() + end

    def _check(self, text: str) -> tuple[tuple[int, int], ...] | None:
        """libphonenumber's spans in `text`, or None when the budget is spent."""
        known = self.verdicts.get(text)
        if known is None:
            known = _checked.get(text)
        if known is None:
            if self.chars_left <= 0:
                return None
            self.chars_left -= len(text)
            known = _matcher_spans(text)
            if len(_checked) >= _PHONE_CACHE_SIZE:
                _checked.clear()
            _checked[text] = known
        self.verdicts[text] = known
        return known

    def _in_run(self, run: str, starts_before: int | None = None) -> list[tuple[int, int]]:
        """Phone numbers in a short run; only those starting before `starts_before` are
        looked for beyond what libphonenumber finds in the whole run."""
        key = (run, starts_before)
        known = _resolved.get(key)
        if known is not None:
            return known
        whole = self._check(run)
        if whole is None:
            return [] if _DATE.fullmatch(run) else [(0, len(run))]
        found = list(whole)
        complete = True  # False once a span was redacted unchecked: not worth caching
        # libphonenumber gives up on a number with another number next to it ("(415)
        # 555-2671 3 times", "room 12 415 555 2671"), so spans of whole groups that are
        # not covered yet are checked on their own, longest first from each group.
        groups = [m.span() for m in _PHONE_GROUP.finditer(run)]
        digits = [e - s - (run[s] in "+(") for s, e in groups]
        limit = len(run) if starts_before is None else starts_before
        done = 0
        for i, (start, first_end) in enumerate(groups):
            if start >= limit:
                break
            if start < done or any(s < first_end and start < e for s, e in found):
                continue
            ends: list[int] = []
            total = 0
            for j in range(i, min(i + _MAX_PHONE_GROUPS, len(groups))):
                total += digits[j]
                if total > _MAX_PHONE_DIGITS or any(s < groups[j][1] <= e for s, e in found):
                    break
                if total >= _MIN_PHONE_DIGITS and (i, j) != (0, len(groups) - 1):
                    ends.append(groups[j][1])
            for end in reversed(ends):
                inner = self._check(run[start:end])
                if inner is None:
                    found.append((start, end))
                    done, complete = end, False
                    break
                if inner:
                    found += [(start + s, start + e) for s, e in inner]
                    done = start + inner[-1][1]
                    break
        found = _merged(found)
        if complete:
            if len(_resolved) >= _PHONE_CACHE_SIZE:
                _resolved.clear()
            _resolved[key] = found
        return found

    def _in_long_run(self, run: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        start = 0
        while True:
            end = min(start + _WINDOW, len(run))
            while start < end < len(run) and run[end].isdigit() and run[end - 1].isdigit():
                end -= 1  # never cut a digit group in two
            last = start + _WINDOW >= len(run)
            if start < end:
                # Numbers starting further on are looked for in the next window.
                spans = self._in_run(run[start:end], None if last else _STEP)
                found += [(start + s, start + e) for s, e in spans]
            if last:
                break
            following = _GROUP_START.search(run, start + _STEP)
            if following is None:
                break
            start = following.start()
        return _merged(found)


def _last_group_start(run: str) -> int:
    start = len(run)
    while start > 0 and run[start - 1].isdigit():
        start -= 1
    return start


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _matcher_spans(text: str) -> tuple[tuple[int, int], ...]:
    if sum(map(str.isdigit, text)) < _MIN_PHONE_DIGITS:
        return ()
    spans: list[tuple[int, int]] = []
    for region in PHONE_REGIONS:
        for found in PhoneNumberMatcher(text, region, leniency=Leniency.STRICT_GROUPING):
            if not any(s < found.end and found.start < e for s, e in spans):
                spans.append((found.start, found.end))
        rest = list(text)
        for s, e in spans:
            rest[s:e] = [""] * (e - s)
        if not any(ch.isdigit() for ch in rest):
            break  # every digit is accounted for; other regions cannot add anything
    return tuple(sorted(spans))
