"""hftd: a low-latency futures trading daemon -- agent processes joined by shared-memory rings."""

__version__ = "0.1.0"
