"""Errors a user can act on. Each carries a one-line message naming what was wrong and the
likely fix; the command line prints it without a traceback and exits non-zero."""


class SmplstreamError(Exception):
    """Base of all errors that are reported to the user as one line."""


class SourceError(SmplstreamError):
    """A frame source could not be opened or stopped delivering frames."""


class PublishError(SmplstreamError):
    """The ZeroMQ publisher could not bind or send."""


class RecordError(SmplstreamError):
    """Motion files could not be written."""


class ConfigError(SmplstreamError):
    """A command-line option or setting is invalid."""


class PipelineError(SmplstreamError):
    """A stage of the running pipeline failed; names the stage and the error."""

    def __init__(self, stage: str, error: BaseException):
        self.stage = stage
        self.error = error
        detail = str(error) or type(error).__name__
        if not isinstance(error, SmplstreamError):
            detail = f"{type(error).__name__}: {detail}"
        super().__init__(f"stage '{stage}' failed: {detail}")
