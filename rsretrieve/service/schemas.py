"""Request bodies of the service (pydantic). Handlers only parse; ``Query.build`` and ``Searcher`` do the rest."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsretrieve.service.guard import ApiError

MAX_TEXT_CHARS = 1000
MAX_K = 10_000
MAX_PARTS = 64  # texts, images or chip ids of one kind in one request
MAX_EMBED_ITEMS = 256

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Texts = Text | Annotated[list[Text], Field(max_length=MAX_PARTS)] | None
ChipIds = Annotated[str, Field(min_length=1, max_length=64)] | Annotated[list[str], Field(max_length=MAX_PARTS)] | None
Images = str | Annotated[list[str], Field(max_length=MAX_PARTS)] | None
MAX_DIM = 8192
Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_DIM)]
Vectors = Vector | Annotated[list[Vector], Field(max_length=MAX_PARTS)] | None
Format = Literal["json", "geojson", "csv", "table"]


def listed(value: Any) -> list[Any]:
    """A field that takes one value or a list, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def vector_list(value: Any) -> list[Any]:
    """A field that takes one vector or a list of vectors, as a list of float32 arrays."""
    import numpy as np

    if not value:
        return []
    return (
        [np.asarray(value, np.float32)]
        if not isinstance(value[0], list)
        else [np.asarray(v, np.float32) for v in value]
    )


class SearchRequest(BaseModel):
    """``POST /v1/search``: what to look for (positives and negatives of each kind), filters, k, output format."""

    model_config = ConfigDict(extra="forbid")

    text: Texts = Field(None, description="text description(s)")
    image: Images = Field(None, description="base64 JPEG, PNG or GeoTIFF (or a list)")
    like: ChipIds = Field(None, description="chip id(s): more like these indexed chips")
    vector: Vectors = Field(None, description="raw embedding(s) of the index's model (e.g. from /v1/embed)")
    not_text: Texts = None
    not_image: Images = None
    not_like: ChipIds = None
    not_vector: Vectors = None
    weights: dict[str, Annotated[float, Field(gt=0, le=1000)]] | None = Field(
        None, description="weight by kind: text, image, like, vector, not_text, not_image, not_like, not_vector (all 1)"
    )
    k: int = Field(10, ge=1, le=MAX_K)
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = Field(
        None, description="minx, miny, maxx, maxy in WGS84 degrees (intersects)"
    )
    start: date | None = Field(None, description="earliest acquisition date YYYY-MM-DD")
    end: date | None = Field(None, description="latest acquisition date YYYY-MM-DD")
    nprobe: int | None = Field(None, ge=1, le=65536)
    rerank: int | None = Field(None, ge=1, le=10000)
    index: str | None = Field(None, description="index name (default: the first served)")
    format: Format | None = Field(None, description="json (default), geojson, csv or table")

    within: dict[str, Any] | None = Field(
        None, description="GeoJSON Polygon/MultiPolygon (WGS84): footprints intersect"
    )
    labels: str | None = Field(None, description="a labelled class: its positives join as like, negatives as not_like")
    offset: int = Field(0, ge=0, description="rank of the first result (0-based); offset + k ≤ 100,000")
    min_score: float | None = Field(None, allow_inf_nan=False, description="only results scoring at least this")

    _iso_date = field_validator("start", "end", mode="before")(lambda value: iso_date(value))


def iso_date(value: Any) -> Any:
    """A ``YYYY-MM-DD`` string as a date (pydantic validator of date fields)."""
    if value is None or isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("a date is a string YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a date YYYY-MM-DD") from None


class EmbedRequest(BaseModel):
    """``POST /v1/embed``: texts or base64 images → L2-normalised vectors of the index's model."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[list[Text], Field(min_length=1, max_length=MAX_EMBED_ITEMS)] | Text | None = None
    image: Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_ITEMS)] | str | None = None
    index: str | None = None


class KnnRequest(BaseModel):
    """clip-retrieval's ``POST /knn-service`` body (as ``ClipClient`` sends it).

    ``modality``, ``deduplicate``, ``use_safety_model``, ``use_violence_detector``, ``use_mclip``,
    ``aesthetic_score``, ``aesthetic_weight`` and ``verbose`` are accepted and ignored: one modality (image chips),
    no safety, violence or aesthetic models; ``image_url`` is refused (the service fetches nothing).
    """

    model_config = ConfigDict(extra="ignore")

    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    image: str | None = None
    image_url: str | None = None
    embedding_input: list[float] | None = None
    indice_name: str | None = None
    num_images: int | None = Field(None, ge=1, le=MAX_K)
    num_result_ids: int | None = Field(None, ge=1, le=MAX_K)
    modality: str | None = None
    deduplicate: bool | None = None
    use_safety_model: bool | None = None
    use_violence_detector: bool | None = None
    use_mclip: bool | None = None
    aesthetic_score: float | str | None = None
    aesthetic_weight: float | str | None = None


class MetadataRequest(BaseModel):
    """clip-retrieval's ``POST /metadata``: integer ids (fids) of an index → their records."""

    model_config = ConfigDict(extra="ignore")

    ids: Annotated[list[int], Field(max_length=MAX_K)]
    indice_name: str | None = None


def parse(model: type[BaseModel], data: bytes | dict[str, Any]) -> Any:
    """Validate a JSON body (bytes) or a dict → the model, or 400 with the first problem in one line."""
    if isinstance(data, bytes | bytearray) and not data.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    try:
        if isinstance(data, bytes | bytearray):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(400, describe(error)) from None


TYPE_PARTS = frozenset({"str", "int", "float", "bool", "list", "dict", "date", "bytes"})


def _field_part(part: Any) -> bool:
    """Whether a location part names a field or an item (not a union branch like ``constrained-str``)."""
    text = str(part)
    return isinstance(part, int) or not ("-" in text or "[" in text or text in TYPE_PARTS)


def describe(error: ValidationError) -> str:
    """The first problem of a validation error in one line, e.g. ``k: Input should be less than or equal to 10000``."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if _field_part(part))
    message = " ".join(str(first.get("msg", "invalid")).split())
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({message})"
    if first.get("type") == "model_type" and not where:
        return "the request body must be a JSON object"
    return f"{where}: {message}" if where else message


def body_schema(model: type) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that parses its JSON body itself (so that bad JSON is a 400, not a 422)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
