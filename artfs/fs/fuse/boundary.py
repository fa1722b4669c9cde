"""The one errno boundary of the FUSE layer.

An ArtfsError becomes its errno and one log line naming the entry; any other
exception is logged with its traceback and answered EIO, so no handler
exception can take the mount down.
"""

from __future__ import annotations

import errno
import functools
import logging

import pyfuse3
from cachetools import TTLCache

from artfs.errors import ArtfsError

log = logging.getLogger("artfs.fs.ops")

_logged_recently: TTLCache = TTLCache(maxsize=4096, ttl=60.0)


def _warn_once(handler: str, error: Exception) -> None:
    """One log line per distinct failure a minute: an outage fails every read, and the
    kernel retries each one, but the log should say it once, with the entry and cause."""
    line = f"{handler}: {error}"
    if line not in _logged_recently:
        _logged_recently[line] = True
        log.warning("%s", line)


def boundary(handler):
    @functools.wraps(handler)
    async def wrapper(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except ArtfsError as e:
            if e.errno not in (errno.ENOENT,):
                _warn_once(handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            _warn_once(handler.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed; answering EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
