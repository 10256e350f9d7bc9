"""The one exception type the CLI turns into a one-line message."""


class UserError(Exception):
    """Bad input from the user: the message names what is wrong and what to do."""
