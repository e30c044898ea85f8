"""Built-in content scanners: prompt injection, personal data, secrets.

These patterns are ours, not the policy author's, and each is written so it cannot
backtrack badly: every repetition is bounded or anchored by a literal. Candidates with a
checksum (card numbers, IBANs) are confirmed before they count, to keep false alarms low.
Findings name the kind and where it was found, never the matched text: a decision record
must not become a place where secrets leak.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cordum.policy.schema import Scanner

Span = tuple[int, int, str]


@dataclass(frozen=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    confirm: Callable[[re.Match[str]], bool] | None = None

    def finditer(self, text: str) -> list[Span]:
        return [
            (m.start(), m.end(), self.kind)
            for m in self.pattern.finditer(text)
            if self.confirm is None or self.confirm(m)
        ]

    def search(self, text: str) -> bool:
        if self.confirm is None:
            return self.pattern.search(text) is not None
        return any(self.confirm(m) for m in self.pattern.finditer(text))


def _luhn(match: re.Match[str]) -> bool:
    digits = [int(ch) for ch in match.group(0) if ch.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _iban(match: re.Match[str]) -> bool:
    compact = match.group(0).replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _not_a_reference(match: re.Match[str]) -> bool:
    value = match.group("value").lower()
    return not value.startswith(("secret://", "${", "{{", "<", "*****"))


_I = re.IGNORECASE
_INSTRUCTIONS = (
    r"(?:instructions?|prompts?|rules?|directives?|guidelines?|guardrails?|policies|constraints?)"
)

_DETECTORS: dict[Scanner, tuple[_Detector, ...]] = {
    Scanner.PROMPT_INJECTION: (
        _Detector(
            "ignore_instructions",
            re.compile(
                r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?"
                r"\b(?:previous|prior|above|earlier|preceding|all|any|your|system)\b[^.\n]{0,40}?"
                rf"\b{_INSTRUCTIONS}\b",
                _I,
            ),
        ),
        _Detector(
            "role_override",
            re.compile(
                r"\byou are now\b[^.\n]{0,30}?\b(?:dan|jailbroken|unrestricted|unfiltered|"
                r"uncensored|evil|in developer mode)\b"
                r"|\b(?:act|pretend|behave)\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:an?\s+)?"
                r"(?:unrestricted|unfiltered|uncensored|jailbroken)\b"
                r"|\bdo anything now\b|\bjailbreak(?:ing|ed)?\b",
                _I,
            ),
        ),
        _Detector(
            "prompt_exfiltration",
            re.compile(
                r"\b(?:reveal|print|show|repeat|output|leak|dump)\b[^.\n]{0,30}?"
                r"\b(?:system prompt|hidden (?:instructions|prompt)|initial instructions)\b",
                _I,
            ),
        ),
        _Detector(
            "role_token",
            re.compile(
                r"<\|?\s*/?\s*(?:system|im_start|im_end)\s*\|?>|\[/?INST\]"
                r"|\bnew (?:system )?instructions?\s*:",
                _I,
            ),
        ),
    ),
    Scanner.PII: (
        _Detector(
            "email",
            re.compile(
                r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
                r"\.[A-Za-z]{2,24}\b"
            ),
        ),
        _Detector("us_ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
        _Detector("card_number", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _luhn),
        _Detector(
            "iban",
            re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
            _iban,
        ),
        _Detector(
            "phone_number",
            re.compile(r"(?<![\w+])\+[1-9]\d{7,14}\b|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"),
        ),
    ),
    Scanner.SECRET: (
        _Detector(
            "aws_access_key_id",
            re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"),
        ),
        _Detector(
            "aws_secret_access_key",
            re.compile(
                r"aws[a-z_]{0,20}?(?:secret|private)[a-z_]{0,20}?['\"]?\s{0,3}[:=]\s{0,3}['\"]?"
                r"[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
                _I,
            ),
        ),
        _Detector(
            "github_token",
            re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        ),
        _Detector("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
        _Detector(
            "slack_token",
            re.compile(
                r"\bxox[abposr]-[A-Za-z0-9-]{10,}"
                r"|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"
            ),
        ),
        _Detector(
            "private_key",
            re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY"),
        ),
        _Detector("stripe_key", re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}")),
        _Detector("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
        _Detector("llm_api_key", re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}")),
        _Detector(
            "jwt",
            re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        ),
        _Detector(
            "credential_assignment",
            re.compile(
                r"\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|"
                r"client[_-]?secret)\b['\"]?\s{0,3}[:=]\s{0,3}['\"]?(?P<value>[^\s'\",;]{8,})",
                _I,
            ),
            _not_a_reference,
        ),
    ),
}


def scan(scanner: Scanner, text: str) -> str | None:
    """The first kind of finding ``scanner`` makes in ``text``, or None."""
    for detector in _DETECTORS[scanner]:
        if detector.search(text):
            return detector.kind
    return None


def spans(scanner: Scanner, text: str) -> list[Span]:
    """Every finding of ``scanner`` in ``text`` as (start, end, kind), for redaction."""
    return [span for detector in _DETECTORS[scanner] for span in detector.finditer(text)]


def detector_kinds(scanner: Scanner) -> tuple[str, ...]:
    """The kinds of finding a scanner reports (for documentation and tests)."""
    return tuple(detector.kind for detector in _DETECTORS[scanner])
