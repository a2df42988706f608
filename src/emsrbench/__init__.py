"""emsrbench: a benchmark harness for large-factor super-resolution of serial-section EM."""

__version__ = "0.1.0"
