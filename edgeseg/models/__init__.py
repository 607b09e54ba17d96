"""Model zoo: ``create_model(name, **cfg)``, ``list_models()``."""

from edgeseg.models.registry import create_model, list_models, model_entry, register_model  # noqa: F401
