"""Errors a user can cause: the CLI prints their message as one line and exits non-zero."""


class BertgeomError(Exception):
    """A problem with the user's input (file, data, model): the message names it and the fix."""


class InputError(BertgeomError):
    """A file or a value given by the user cannot be used (missing, empty, wrong format)."""


class ModelError(BertgeomError):
    """A model directory cannot be used (missing, not a supported BERT, no attention)."""
