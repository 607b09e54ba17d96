"""Accuracy: COCO mask AP (``coco``), YouTube-VIS AP (``vis``), regression gate (``regress``)."""
