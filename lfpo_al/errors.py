"""The one exception type the CLI turns into a one-line message."""


class UserError(Exception):
    """Bad input from the user: the message names what is wrong and what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (empty when it has none), for one-line reasons."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
