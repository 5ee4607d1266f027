"""cvtool: one command-line toolkit for the vision jobs people run from a shell."""

__version__ = "0.1.0"
