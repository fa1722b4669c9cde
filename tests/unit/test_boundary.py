"""The errno boundary: every handler the kernel can call is guarded; typed errors become
their errnos, a bug becomes EIO with one ERROR line, and nothing escapes to pyfuse3."""

from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from artfs.errors import ERRNOS, FsError, NameTooLong, NotFound, ReadOnly, StoreUnavailable, errno_of
from artfs.fs.fuse.boundary import GUARD_MARK, kernel_handlers
from artfs.fs.fuse.ops import Operations


def test_every_kernel_handler_is_guarded():
    names = kernel_handlers()
    assert {"lookup", "statfs", "release", "releasedir", "forget", "link", "symlink", "mknod"} <= set(names)
    unguarded = [n for n in names if not getattr(getattr(Operations, n), GUARD_MARK, False)]
    assert unguarded == []


class Failing:
    """A filesystem core whose every answer is the error given (the adapter only translates)."""

    def __init__(self, error: BaseException):
        self.error = error
        self.tree = None

    def __getattr__(self, name):
        error = self.error

        def fail(*args, **kwargs):  # raises when called, before any await: serves sync and async calls
            raise error

        return fail


def call(ops: Operations, handler: str, *args):
    async def go():
        return await getattr(ops, handler)(*args)

    return trio.run(go)


@pytest.mark.parametrize(
    "error, code",
    [
        (NotFound("no such entry"), errno.ENOENT),
        (ReadOnly("versions are read-only"), errno.EROFS),
        (NameTooLong("x"), errno.ENAMETOOLONG),
        (FsError(errno.ENOTEMPTY), errno.ENOTEMPTY),
        (StoreUnavailable("store hung"), errno.EIO),
        (OSError(errno.ENOSPC, "disk full"), errno.ENOSPC),
    ],
)
def test_a_typed_error_answers_its_errno(error, code):
    with pytest.raises(pyfuse3.FUSEError) as raised:
        call(Operations(Failing(error)), "getattr", 5, None)
    assert raised.value.errno == code


def test_expected_errnos_log_at_debug_and_failures_at_warning(caplog):
    caplog.set_level(logging.DEBUG, logger="artfs.fs")
    for error in (NotFound("missing-name"), StoreUnavailable("store-hung")):
        with pytest.raises(pyfuse3.FUSEError):
            call(Operations(Failing(error)), "lookup", 1, b"x", None)
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels == {"lookup: missing-name": logging.DEBUG, "lookup: store-hung": logging.WARNING}


def test_a_bug_answers_eio_logs_one_traceback_and_the_handler_works_again(caplog):
    caplog.set_level(logging.DEBUG, logger="artfs.fs")
    ops = Operations(Failing(RuntimeError("a bug")))
    with pytest.raises(pyfuse3.FUSEError) as raised:
        call(ops, "statfs", None)
    assert raised.value.errno == errno.EIO
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None and "statfs" in errors[0].getMessage()
    ops.fs.error = NotFound("fine now")
    with pytest.raises(pyfuse3.FUSEError) as raised:
        call(ops, "statfs", None)
    assert raised.value.errno == errno.ENOENT


@pytest.mark.parametrize("handler, args", [("release", (3,)), ("releasedir", (3,)), ("forget", ([(5, 1)],))])
def test_handlers_whose_answer_the_kernel_ignores_never_raise(handler, args):
    assert call(Operations(Failing(RuntimeError("a bug"))), handler, *args) is None


def test_one_table_maps_every_error_type():
    for kind, code in ERRNOS.items():
        assert errno_of(kind("x") if kind is not FsError else FsError(code)) == code
