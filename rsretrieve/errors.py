"""The base of every error whose message is a complete, one-line explanation for the user."""


class UserError(Exception):
    """A problem with the user's input or environment; the CLI prints ``error: <message>`` and exits 1."""
