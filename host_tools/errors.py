"""Errors every verb may raise; the CLI turns them into one line and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""
