"""minitl's exception classes. Each message names the file, layer and shapes involved."""


class MinitlError(Exception):
    """Base class of every error minitl raises on purpose."""


class ShapeError(MinitlError, ValueError):
    """Operands whose shapes, ranks or dtypes do not fit the operation."""


class GradcheckError(MinitlError, AssertionError):
    """An analytic gradient disagrees with central differences."""


class WeightsError(MinitlError):
    """A weights file that cannot be read, written or does not fit the model. ``missing``: the
    model's layers that a strict load found no weights for (empty for other problems)."""

    def __init__(self, message, missing=()):
        super().__init__(message)
        self.missing = list(missing)


class DownloadError(MinitlError):
    """A download that failed, was truncated or has the wrong checksum."""


class DataError(MinitlError):
    """A dataset folder or image that cannot be used."""


class DeviceError(MinitlError):
    """A device that is not available, or arrays on different devices in one op."""


class TrainingError(MinitlError):
    """Training that cannot go on (a NaN or infinite loss, a bad run directory)."""


class DiskFullError(MinitlError):
    """A write that failed for lack of space or quota (ENOSPC, EDQUOT, EFBIG); its temporary
    file is removed. ``resume``: the run can continue with --resume once there is space."""

    def __init__(self, message, resume=False):
        super().__init__(message)
        self.resume = resume


class FileAccessError(MinitlError):
    """A file or folder that this user may not read or write, or on a read-only file system."""
