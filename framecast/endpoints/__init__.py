"""The endpoint catalogue: each endpoint's schema, example, and how its fields map to engine terms."""

from framecast.endpoints.catalogue import build_catalogue
from framecast.endpoints.spec import EndpointSpec, GenerationPlan, ImageDimensions

__all__ = ["EndpointSpec", "GenerationPlan", "ImageDimensions", "build_catalogue"]
