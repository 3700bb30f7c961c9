"""refit: keeps machine-learning models fresh without ever letting them get worse."""

__version__ = "0.1.0"
