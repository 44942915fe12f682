"""The ``policies:`` models of a stream: which field gets which column policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaskPolicy(_Policy):
    """Replace every non-null value by a fixed text (optionally as long as the value)."""

    policy: Literal["mask"]
    replacement: str = Field("****", min_length=1, description="the fixed text values are replaced by")
    keep_length: bool = Field(
        False,
        description="repeat the replacement's first character as many times as the value has characters",
    )


class HashPolicy(_Policy):
    """Keyed HMAC-SHA-256 of the value's text (UTF-8) or bytes; the key comes from the
    environment or a file, never from the YAML itself."""

    policy: Literal["hash"]
    secret_env: str | None = Field(None, description="environment variable holding the HMAC key")
    secret_file: Path | None = Field(None, description="file holding the HMAC key (relative to the config)")
    output: Literal["hex", "bytes"] = Field(
        "hex", description="hex: a 64-character string field; bytes: a 32-byte bytes field"
    )

    @model_validator(mode="after")
    def _one_secret(self) -> HashPolicy:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env or secret_file")
        return self


class TruncatePolicy(_Policy):
    """Keep the first ``length`` characters of a text value."""

    policy: Literal["truncate"]
    length: int = Field(ge=0, description="characters kept")


class NullPolicy(_Policy):
    """Drop the value: the field is always null (so it must be nullable)."""

    policy: Literal["null"]


Policy = Annotated[MaskPolicy | HashPolicy | TruncatePolicy | NullPolicy, Field(discriminator="policy")]
