"""The one exception a user should ever see: a clear, one-line reason, no stack trace."""


class UserError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits with status 2."""
