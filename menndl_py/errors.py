"""Errors a user can act on: printed as one line, exit status 2."""


class UserError(Exception):
    """Bad input (config, data, command line, launch geometry): one line, exit 2, no traceback."""


class CandidateRefused(Exception):
    """A genome that cannot become a network for this task (the reason is the message)."""
