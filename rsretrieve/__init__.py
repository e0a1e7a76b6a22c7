"""rsretrieve: text and image search over remote-sensing archives."""

__version__ = "0.1.0"
