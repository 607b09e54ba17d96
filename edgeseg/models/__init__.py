"""Model zoo: ``create_model(name, **cfg)``, ``list_models()``."""

from edgeseg.models.registry import create_model, family, list_families, list_models, model_entry  # noqa: F401
