"""The one exception type the CLI turns into a one-line error."""


class SwarmlabError(Exception):
    """A failure the user can act on. str(e) is the whole message: what, and how to fix it."""

    exit_code = 1


class NotFound(SwarmlabError):
    exit_code = 3


class Refused(SwarmlabError):
    """Refused for safety (ownership, quorum, a running template)."""

    exit_code = 4
