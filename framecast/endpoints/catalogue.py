"""Every endpoint this server speaks, keyed by endpoint id."""

from __future__ import annotations

from framecast.endpoints.closed import CLOSED_ENDPOINTS
from framecast.endpoints.framepack import FRAMEPACK_ENDPOINTS
from framecast.endpoints.magi import MAGI_ENDPOINTS
from framecast.endpoints.spec import EndpointSpec
from framecast.endpoints.stable_video import STABLE_VIDEO_ENDPOINTS
from framecast.endpoints.wan import WAN_ENDPOINTS


def build_catalogue() -> dict[str, EndpointSpec]:
    """All endpoints, open models first; raises `ValueError` on a duplicate id or a bad image role."""
    catalogue: dict[str, EndpointSpec] = {}
    for spec in [*FRAMEPACK_ENDPOINTS, *WAN_ENDPOINTS, *STABLE_VIDEO_ENDPOINTS, *MAGI_ENDPOINTS, *CLOSED_ENDPOINTS]:
        if spec.endpoint_id in catalogue:
            raise ValueError(f"duplicate endpoint {spec.endpoint_id}")
        catalogue[spec.endpoint_id] = spec
    return catalogue
