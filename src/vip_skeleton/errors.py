"""The one exception type the CLI turns into a readable error line, and how a message fits one."""


class CliError(Exception):
    """A failure to report as ``error: <message>`` with a non-zero exit code.

    Attributes:
        exit_code: the process exit code to use (1 unless a command documents another).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(exc: BaseException) -> str:
    """Return the exception's message collapsed to one line (its class name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
