"""The one errno boundary: every handler the kernel can call passes through `guarded`.

`guarded` wraps a whole operations class: each method that pyfuse3.Operations
declares is wrapped, so a handler added later cannot miss it. A typed error
becomes its errno (errors.ERRNOS); expected errnos (ENOENT, EROFS…) log at
DEBUG, other errors once a minute at WARNING; anything else is a bug: logged
once at ERROR with its traceback and answered EIO, and the daemon lives on.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import time

import pyfuse3
from cachetools import TTLCache

from artfs.errors import EXPECTED_ERRNOS, ArtfsError, errno_of
from artfs.fs import metrics

log = logging.getLogger("artfs.fs")

_logged_recently: TTLCache = TTLCache(maxsize=4096, ttl=60.0)
GUARD_MARK = "__artfs_guarded__"

# Handlers whose failure the kernel never hears of: they must not raise at all.
_SILENT = {"forget", "release", "releasedir", "init", "destroy", "stacktrace"}


def _warn_once(handler: str, error: BaseException) -> None:
    """One log line per distinct failure a minute: an outage fails every read, and the
    kernel retries each one, but the log should say it once, with the entry and cause."""
    # Keyed by the error alone: lookup, opendir and getattr meeting one damaged shard say it once.
    said = str(error)
    if said not in _logged_recently:
        _logged_recently[said] = True
        log.warning("%s: %s", handler, said)


def _failed(answer: BaseException) -> bool:
    """ENOSYS is an answer by design (FLUSH, ACCESS: the kernel stops asking), not a failure."""
    return getattr(answer, "errno", None) != errno.ENOSYS


def _answer(name: str, error: BaseException) -> pyfuse3.FUSEError:
    if isinstance(error, pyfuse3.FUSEError):
        return error
    if isinstance(error, (ArtfsError, OSError)):
        code = errno_of(error)
        if code in EXPECTED_ERRNOS:
            log.debug("%s: %s", name, error)
        else:
            _warn_once(name, error)
        return pyfuse3.FUSEError(code)
    log.error("%s failed; answering EIO", name, exc_info=error)
    return pyfuse3.FUSEError(errno.EIO)


def _wrap(name: str, handler):
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def guarded_async(*args, **kwargs):
            started = time.perf_counter() if metrics.enabled else 0.0
            try:
                result = await handler(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 (trio's Cancelled passes through below)
                if not isinstance(e, Exception):
                    raise
                answer = _answer(name, e)
                if metrics.enabled:
                    metrics.observe_request(name, time.perf_counter() - started, _failed(answer))
                if name in _SILENT:
                    return None
                raise answer from None
            if metrics.enabled:
                metrics.observe_request(name, time.perf_counter() - started, False, result)
            return result

        wrapper = guarded_async
    else:

        @functools.wraps(handler)
        def guarded_sync(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as e:
                answer = _answer(name, e)
                if name in _SILENT:
                    return None
                raise answer from None

        wrapper = guarded_sync
    setattr(wrapper, GUARD_MARK, True)
    return wrapper


def kernel_handlers() -> list[str]:
    """Every request handler pyfuse3 may call on an Operations object."""
    return [n for n, v in vars(pyfuse3.Operations).items() if callable(v) and not n.startswith("_")]


def guarded(cls):
    """Wraps each of pyfuse3.Operations' handlers that `cls` has (its own or inherited)."""
    for name in kernel_handlers():
        handler = getattr(cls, name, None)
        if handler is not None and not getattr(handler, GUARD_MARK, False):
            setattr(cls, name, _wrap(name, handler))
    return cls
