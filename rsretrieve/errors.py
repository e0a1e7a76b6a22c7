"""The base of every error whose message is a complete, one-line explanation for the user."""


class UserError(Exception):
    """A problem with the user's input or environment; the CLI prints ``error: <message>`` and exits 1."""


def one_line(error: BaseException) -> str:
    """What to tell the user: a UserError's message, or the type and first line of an unexpected error."""
    if isinstance(error, UserError):
        return str(error)
    detail = (str(error).strip().splitlines() or [""])[0]
    return f"unexpected {type(error).__name__}: {detail}"
