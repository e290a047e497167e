"""Model registry. ``build_model`` / ``replace_head`` live in ``imgclass.models.build`` (imports torch)."""
from .registry import (DEFAULT_NETWORK, REGISTRY, ModelSpec, Weights, find_weights, get_spec, how_to_get, list_specs,
                       read_weights, require_weights)

__all__ = ["DEFAULT_NETWORK", "REGISTRY", "ModelSpec", "Weights", "find_weights", "get_spec", "how_to_get", "list_specs",
           "read_weights", "require_weights"]
