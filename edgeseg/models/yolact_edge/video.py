"""YolactEdge's video strategy (partial feature transform): work in progress."""


class FeatureWarp:
    name = "feature warp"
