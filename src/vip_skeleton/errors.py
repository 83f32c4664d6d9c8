"""The one exception type the CLI turns into a readable error line."""


class CliError(Exception):
    """A failure to report as ``error: <message>`` with a non-zero exit code.

    Attributes:
        exit_code: the process exit code to use (1 unless a command documents another).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
