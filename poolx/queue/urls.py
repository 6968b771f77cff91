"""URL helpers shared by the broker and the backends.

Owned here: :func:`redact_url`, the one place that decides how a backend URL
is shown to people.  Every repr, log line and error message of the
task-queue layer that names a URL goes through it, so a password written in
a URL (``redis://:secret@host/0``) never reaches a log, a traceback or a
terminal.  The full URL stays where it is needed: the backend connects with
it, and a pickled :class:`~poolx.task.Deferred` carries it so that it can
reconnect in another process.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["redact_url", "redact_urls", "REDACTED"]

REDACTED = "***"
"""What a password is replaced with."""


def redact_url(url: Any) -> str:
    """``url`` with any password replaced by ``***``.

    Works on anything (a malformed URL, a non-string) without raising, since
    it is called while reporting errors::

        >>> redact_url("redis://user:pw@host:6379/0")
        'redis://user:***@host:6379/0'
        >>> redact_url("redis://:pw@host")
        'redis://:***@host'
        >>> redact_url("redis://host/0?password=pw&db=1")
        'redis://host/0?password=***&db=1'
        >>> redact_url("memory://")
        'memory://'
    """
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The authority ends at the first "/", "?" or "#"; credentials end at its
    # last "@" (a password may itself contain "@" if it was not escaped).
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], _redact_query(rest[end:])
    if "@" not in authority:
        return f"{scheme}://{authority}{tail}"
    userinfo, _, host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not colon:
        # "redis://word@host": redis-py reads a lone userinfo as a user name,
        # but people often put a password there; hide it either way.
        return f"{scheme}://{REDACTED}@{host}{tail}"
    return f"{scheme}://{user}:{REDACTED}@{host}{tail}"


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_TRAILING = ").,;:]}"  # closes the sentence around a URL, not the URL


def redact_urls(text: str) -> str:
    """``text`` (an error message, say) with every URL in it shown as
    :func:`redact_url` shows it::

        >>> redact_urls("cannot reach redis://:pw@host/0 (timeout)")
        'cannot reach redis://:***@host/0 (timeout)'
    """
    if "://" not in text:
        return text

    def redact(match: re.Match[str]) -> str:
        url = match.group(0)
        end = len(url.rstrip(_TRAILING))
        return redact_url(url[:end]) + url[end:]

    return _URL_IN_TEXT.sub(redact, text)


def _redact_query(tail: str) -> str:
    """The path, query and fragment with the value of every query option
    whose name says it is a secret (``?password=``, ``ssl_password=``...:
    redis-py takes them from the query too) replaced by ``***``."""
    path, question, rest = tail.partition("?")
    if not question:
        return tail
    query, hash_, fragment = rest.partition("#")
    options = []
    for option in query.split("&"):
        name, equals, _value = option.partition("=")
        if equals and any(word in name.lower() for word in _SECRET_WORDS):
            option = f"{name}={REDACTED}"
        options.append(option)
    return f"{path}?{'&'.join(options)}{hash_}{fragment}"


_SECRET_WORDS = ("pass", "secret", "token", "key")
