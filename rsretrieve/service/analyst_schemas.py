"""Request bodies of the analyst-loop endpoints (labels, classify): see docs/service.md and SERVICE_ANALYST_API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rsretrieve.service.schemas import MAX_K, iso_date

MAX_LABEL_IDS = 10_000  # chip ids of one kind in one labelling request
ChipId = Annotated[str, Field(min_length=1, max_length=64)]
ChipIdList = Annotated[list[ChipId], Field(max_length=MAX_LABEL_IDS)]
ClassName = Annotated[str, Field(min_length=1, max_length=200)]  # checked by labels.check_class (one clear line)


class LabelRequest(BaseModel):
    """``POST /v1/labels``: label chips of the index as positive or negative examples of a class."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_name: ClassName = Field(alias="class", description="class name, e.g. solar-farm")
    positive: ChipIdList = Field(default_factory=list, description="chip ids showing the class")
    negative: ChipIdList = Field(default_factory=list, description="chip ids that do not")
    note: Annotated[str, Field(max_length=1000)] = ""
    index: str | None = None


class RemoveLabelsRequest(BaseModel):
    """``POST /v1/labels/remove``: remove the labels of chip ids of a class, or (no ids) the whole class."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_name: ClassName = Field(alias="class")
    ids: ChipIdList | None = Field(None, description="chip ids (default: every label of the class)")
    index: str | None = None


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: train on a class's labels, score every chip, page through those above the threshold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_name: ClassName = Field(alias="class")
    threshold: float = Field(0.8, gt=0, lt=1, description="probability from which a chip is found")
    within: dict[str, Any] | None = Field(
        None, description="GeoJSON Polygon/MultiPolygon (WGS84): footprints intersect"
    )
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = None
    start: date | None = None
    end: date | None = None
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=MAX_K)
    polygons: bool = Field(False, description="also the sites: touching found chips dissolved")
    format: Literal["json", "geojson"] = "json"
    index: str | None = None

    _iso_date = field_validator("start", "end", mode="before")(lambda value: iso_date(value))
