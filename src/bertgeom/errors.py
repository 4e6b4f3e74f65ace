"""Errors a user can cause: the CLI prints their message as one line and exits non-zero."""


class BertgeomError(Exception):
    """A problem with the user's input (file, data, model): the message names it and the fix."""


class InputError(BertgeomError):
    """A file or a value given by the user cannot be used (missing, empty, wrong format)."""


class ModelError(BertgeomError):
    """A model directory cannot be used (missing, not a supported BERT, no attention)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line
    errors that wrap a library's exception."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
