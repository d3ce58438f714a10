"""Exceptions that the CLI and the toolbox report as one clear line."""


class DvisError(Exception):
    """A user-facing error: bad input, bad settings, missing files. Shown as one line."""


class LayerNotFoundError(DvisError, ValueError):
    """A layer name that the model does not have; the message lists the valid names."""
