"""The errors a data source raises: ``ValueError`` subclasses, so callers may catch either."""


class DataSourceError(ValueError):
    """A data source cannot be opened or read; the message says what is wrong and what to do."""


class DatasetNotFoundError(DataSourceError):
    """The named dataset is not on this machine (or does not exist); the message says how to get it."""


class IdxFormatError(DataSourceError):
    """An idx file (the MNIST format) is truncated, corrupt or not an idx file at all."""
