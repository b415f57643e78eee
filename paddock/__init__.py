"""paddock: take a submitted language model to real users in minutes."""

__version__ = "0.1.0"
