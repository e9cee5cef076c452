"""Errors a user can act on: printed as one line, exit status 2."""


class UserError(Exception):
    """Bad input (config, data, command line, launch geometry): one line, exit 2, no traceback."""


class CandidateRefused(Exception):
    """A genome that cannot become a network for this task (the reason is the message)."""


def os_error_line(exc: OSError) -> str:
    """An OSError as one line: `<file>: <reason>` (the reason alone when it names no file)."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    return f"{exc.filename}: {reason}" if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}: {reason}"
