"""YolactEdge (Liu et al., ICRA 2021): YOLACT in four separately converted components, and
partial feature transform for video. See ``family.py`` for the description."""
