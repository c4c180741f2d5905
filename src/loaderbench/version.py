"""loaderbench's version (one place; the package root and the documents it writes read it here)."""

__version__ = "0.1.0"
