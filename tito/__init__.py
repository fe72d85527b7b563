"""tito: the TinyTorch command-line tool (export, test, release, grade, ...)."""

__version__ = "0.1.0"
