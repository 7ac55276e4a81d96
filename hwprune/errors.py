"""The one error hierarchy of hwprune.

Library code raises these; only the CLI turns them into a line on stderr and exit code 2.
"""

__all__ = ["HwPruneError", "ConfigError", "UnsupportedLayerError", "ExportError", "VerificationError",
           "UserCodeError"]


class HwPruneError(Exception):
    """Base class of every error hwprune raises on bad input or failed checks."""


class ConfigError(HwPruneError, ValueError):
    """An array configuration, pattern, plan or command-line value is invalid."""


class UnsupportedLayerError(HwPruneError):
    """A layer, operator or pattern/array combination that hwprune cannot map."""


class ExportError(HwPruneError):
    """Writing or reading an artifact (ONNX, memory image, checkpoint) failed."""


class VerificationError(HwPruneError):
    """Simulated hardware disagreed with the reference (values or cycles)."""


class UserCodeError(ConfigError):
    """A user's model factory, data loaders, loss or metric (named by import path) failed."""
