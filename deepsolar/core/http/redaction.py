"""Secrets (API keys) never in a message, a log record, a cache key or a file.

Secrets are registered with :func:`register_secret`; :func:`redact` replaces each, in any URL
encoding, by ``REDACTED``; :func:`redact_logs` puts the one redacting filter (``_FILTER``) on
loggers (httpx's and httpcore's from the import on); :func:`quiet_http_logs` keeps httpx's
per-request INFO lines off unless ``DEEPSOLAR_HTTP_LOG=1``.
"""

from __future__ import annotations

import logging
import os
import re
import threading

REDACTED = "REDACTED"


_secrets: set[str] = set()
_secret_patterns: list[re.Pattern[str]] = []
_secrets_lock = threading.Lock()


def _secret_pattern(secret: str) -> re.Pattern[str]:
    """A regex matching ``secret`` in any URL encoding.

    Each character raw or percent-encoded (upper or lower case hex, once or twice), a space also
    as ``+``. This covers quote(), quote_plus() with any ``safe`` set, urlencode() and httpx's own
    normalisation at once.
    """
    parts = []
    for ch in secret:
        alts = [re.escape(ch)]
        enc = "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for form in (enc, enc.replace("%", "%25")):
            alts.append("".join(f"[{c}{c.lower()}]" if c.isalpha() else re.escape(c) for c in form))
        if ch == " ":
            alts.append(r"\+")
        parts.append("(?:" + "|".join(alts) + ")")
    return re.compile("".join(parts))


def register_secret(value: str) -> None:
    """Remember a secret (an API key) so :func:`redact` and log records hide it from now on.

    Args:
        value: The secret; values shorter than 4 characters are ignored (they would redact
            ordinary text).
    """
    if value and len(value) >= 4:  # a 1-3 character "secret" would redact ordinary text
        with _secrets_lock:
            if value not in _secrets:
                _secrets.add(value)
                _secret_patterns.append(_secret_pattern(value))
                _secret_patterns.sort(key=lambda p: len(p.pattern), reverse=True)


def redact(text: str) -> str:
    """``text`` with every registered secret, in any URL encoding, replaced by REDACTED.

    Args:
        text: A message, URL or log line.

    Returns:
        The text with secrets hidden (unchanged when none is registered).
    """
    if not _secrets or not text:
        return text
    for pat in list(_secret_patterns):
        text = pat.sub(REDACTED, text)
    return text


def quiet_http_logs() -> None:
    """Httpx logs every request URL at INFO: keep that off unless DEEPSOLAR_HTTP_LOG=1.

    Even redacted, URLs of a whole region's tiles are noise in an operator's log.
    """
    if os.environ.get("DEEPSOLAR_HTTP_LOG", "").strip() not in ("1", "true", "yes"):
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


class _RedactingFilter(logging.Filter):
    """Rewrites log records of third-party loggers (httpx logs every URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                msg = record.getMessage()
            except Exception:  # a malformed record is not ours to fix
                return True
            record.msg, record.args = redact(msg), None
        return True


_FILTER = _RedactingFilter()


def redact_logs(*logger_names: str) -> None:
    """Redact registered secrets from every record these loggers emit (httpx logs each URL).

    Args:
        logger_names: names of the loggers whose own records are rewritten (a filter on a
            logger does not reach its children: name each one).
    """
    for name in logger_names:
        logging.getLogger(name).addFilter(_FILTER)


redact_logs(
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
quiet_http_logs()
