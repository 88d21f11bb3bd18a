"""Problems a user can fix. Each is reported in one line that says what to change, never as a traceback."""


class UserError(Exception):
    kind = "Error"

    def report(self) -> str:
        return f"{self.kind}: {self}"


class ConfigError(UserError, ValueError):
    """A config value that composes but makes no sense; the message names the key."""

    kind = "Config error"


class DataError(UserError, RuntimeError):
    """No source gave MNIST arrays with the expected checksums."""

    kind = "Data error"


class StoreError(UserError, RuntimeError):
    """The tracking store cannot be used; found before anything is trained."""

    kind = "Tracking error"


class ReportError(UserError, RuntimeError):
    """Nothing to report on, or the store cannot be read."""

    kind = "Report error"
