"""Phone numbers in free text, found by libphonenumber within a time budget per message.

libphonenumber is the judge of what is a phone number; what this module adds is keeping
it linear on hostile input (a megabyte of digit runs) and catching numbers it gives up on
when another number stands next to them. Strict grouping keeps years, counts and lists of
small numbers ("1 2 3 4 5 6 7 8 9 10") from being taken for phone numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from phonenumbers import Leniency, PhoneNumberMatcher

__all__ = ["PHONE_REGIONS", "PhoneFinder"]

# Regions whose national formats (no "+country" prefix) are recognised.
PHONE_REGIONS = ("US", "GB")

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

# Shared across messages: libphonenumber's spans per text, and the finder's per run.
_checked: dict[str, tuple[tuple[int, int], ...]] = {}
_resolved: dict[tuple[str, int | None], list[tuple[int, int]]] = {}


class PhoneFinder:
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
