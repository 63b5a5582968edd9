"""Pieces shared by every model family's schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class FalInput(BaseModel):
    """Base of every endpoint input.

    fal's apps ignore fields they do not know, and newer clients send fields that
    older schemas lack, so unknown fields are accepted; the endpoint names them
    in the job's logs instead of dropping them silently.
    """

    model_config = ConfigDict(extra="allow")


def _integer_as_string(value: Any) -> Any:
    # fal types these enums as strings ("5", "16"), but its own examples and older
    # clients send integers: accept both, as the hosted service does.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# Use as `Annotated[Literal["5", "10"], INTEGER_AS_STRING]`: a string enum that also takes integers.
INTEGER_AS_STRING = BeforeValidator(_integer_as_string)
