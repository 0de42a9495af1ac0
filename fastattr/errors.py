"""The exception for problems with what the caller asked for (bad options, unreadable files, a
busy output folder), as opposed to bugs in fastattr. The CLI prints these as one line and exits
with code 2; every other exception keeps its traceback, so an internal bug shows as a bug."""
from __future__ import annotations

import contextlib
from typing import Iterator


class UserError(ValueError):
    """A bad argument, option or input file, described in words the user can act on. A
    ValueError, so callers that catch ValueError keep working."""


class UserTypeError(UserError, TypeError):
    """A UserError for an argument of the wrong type; also a TypeError (what the API raised before)."""


@contextlib.contextmanager
def checking_arguments() -> Iterator[None]:
    """Inside: a ValueError / TypeError is the caller's argument error and leaves as UserError /
    UserTypeError (message kept). Wrap only pure validation code (no model call on user data, no
    I/O), where every such error is about the arguments."""
    try:
        yield
    except UserError:
        raise
    except TypeError as exc:
        raise UserTypeError(str(exc)) from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
