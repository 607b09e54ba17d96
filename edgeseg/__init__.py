"""edgeseg: take trained PyTorch instance-segmentation models to phones and edge boards."""

__version__ = "0.1.0"

from edgeseg.errors import EdgesegError  # noqa: E402,F401
