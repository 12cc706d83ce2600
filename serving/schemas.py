"""The HTTP API's request and response models (pydantic; FastAPI turns them into OpenAPI).

Request bodies are strict: unknown fields, booleans for numbers, numeric strings and NaN are
refused, so a client's mistake is a 422 naming the field rather than a silent coercion. The
closed lists (policies, genders, sources) come from ``contract`` so the schema cannot drift
from what the recommender and the feature transforms accept.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from contract.config import POLICIES, ModelSettings
from contract.events import MAX_ID_LEN, MAX_SHOWN
from contract.features import CATEGORIES, GENDERS, SOURCES
from contract.feedback import REWARD_KINDS

__all__ = ["BoostIn", "CatalogOut", "ErrorResponse", "EventsOut", "ExplanationOut",
           "FeedbackRequest", "FeedbackResponse", "HealthResponse", "ItemOut", "OutOfStockIn",
           "OutOfStockOut",
           "PinIn", "ProductOut", "RecommendRequest", "RecommendResponse", "UserFeatures",
           "recommend_request_model"]


def _iso_text(value: Any) -> Any:
    """Times are ISO 8601 strings, as the schema says (pydantic's lax mode would also take
    a number as epoch seconds)."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


def _json_int(value: Any) -> Any:
    """JSON Schema's integer: 7 or 7.0, but never true, "7" or 7.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_int)]
# Years 1970-9999: events carry epoch milliseconds >= 0. JSON Schema has no date minimum, so
# the pattern says it (generated clients and the property test then know).
Timestamp = Annotated[datetime, Field(strict=False, json_schema_extra={
    "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-"}), BeforeValidator(_iso_text)]
# Literal of a tuple is the Literal of its items: the enums are contract's lists.
Policy = Literal[POLICIES]  # type: ignore[valid-type]
Gender = Literal[GENDERS]  # type: ignore[valid-type]
Source = Literal[SOURCES]  # type: ignore[valid-type]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
ProductId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]
MAX_ABS_X = ModelSettings().max_abs_x
"""The default RTREC_MAX_ABS_X: an x entry beyond it would be an impression the job refuses."""
Num = Annotated[float, Field(ge=-MAX_ABS_X, le=MAX_ABS_X)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class UserFeatures(_Strict):
    """Raw features of a user not in the user table (or to override it)."""

    age: JsonInt = Field(ge=0, le=150)
    gender: Gender
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    source: Source


class PinIn(_Strict):
    """Show ``product_id`` at ``slot`` (0 = first; below k) when it is eligible."""

    product_id: ProductId
    slot: Annotated[int, Field(ge=0, lt=MAX_SHOWN), BeforeValidator(_json_int)]


class BoostIn(_Strict):
    """``score + (multiply - 1) * |score| + add`` for one product or a whole category; bounded
    by RTREC_MAX_BOOST_ADD and RTREC_MAX_BOOST_MULTIPLY (422 beyond)."""

    product_id: ProductId | None = None
    category: Category | None = None
    add: float = 0.0
    multiply: float = Field(default=1.0, gt=0)


class RecommendRequest(_Strict):
    """Who, when, how many. The context is ``x`` if given, else ``user``, else the user table."""

    user_id: JsonInt = Field(ge=0, le=2**53 - 1, description="Logged in the impression.")
    user: UserFeatures | None = None
    x: list[Num] | None = Field(default=None, max_length=4096,
                                description="An explicit context vector of length dim.")
    at: Timestamp | None = Field(
        default=None, description="Time of the visit (ISO 8601; default now; naive = UTC).")
    k: Annotated[int, Field(ge=1, le=MAX_SHOWN), BeforeValidator(_json_int)] | None = Field(
        default=None, description="How many products (default RTREC_TOP_K).")
    policy: Policy | None = None
    alpha: float | None = Field(default=None, ge=0, le=1e6)
    exclude: list[ProductId] | None = Field(
        default=None, max_length=1000, description="Product ids not to show (added to "
        "RTREC_EXCLUDE); each must be in the catalog.")
    in_stock_only: bool | None = Field(default=None, description="Leave out-of-stock "
                                       "products out (default RTREC_IN_STOCK_ONLY).")
    include_categories: list[Category] | None = Field(
        default=None, min_length=1, description="Only these categories (replaces "
        "RTREC_INCLUDE_CATEGORIES).")
    exclude_categories: list[Category] | None = Field(
        default=None, description="Never these categories (added to "
        "RTREC_EXCLUDE_CATEGORIES).")
    pins: list[PinIn] | None = Field(default=None, max_length=MAX_SHOWN,
                                     description="Products at fixed slots (replaces RTREC_PINS).")
    boosts: list[BoostIn] | None = Field(default=None, max_length=100,
                                         description="Score boosts (replaces RTREC_BOOSTS).")
    max_per_category: Annotated[int, Field(ge=1, le=MAX_SHOWN),
                                BeforeValidator(_json_int)] | None = Field(
        default=None, description="At most this many products of a category (default "
        "RTREC_MAX_PER_CATEGORY).")
    mmr_lambda: float | None = Field(default=None, ge=0, le=1, description="MMR diversity "
                                     "weight: 0 the plain ranking (default RTREC_MMR_LAMBDA).")
    explain: bool = Field(default=False, description="Add each item's score terms.")


def recommend_request_model(dim: int, max_abs_x: float = MAX_ABS_X) -> type[RecommendRequest]:
    """:class:`RecommendRequest` with x's exact length (the settings' dim) and bound
    (``RTREC_MAX_ABS_X``) in the schema, so generated clients and property tests know them; the
    library checks them again for in-process callers."""
    item = Annotated[float, Field(ge=-max_abs_x, le=max_abs_x)]
    return create_model(
        "RecommendRequest", __base__=RecommendRequest,
        x=(list[item] | None, Field(  # type: ignore[valid-type]
            default=None, min_length=dim, max_length=dim,
            description=f"An explicit context vector ({dim} numbers, each within "
                        f"-{max_abs_x:g}..{max_abs_x:g}); overrides user and user_id.")))


class ItemOut(BaseModel):
    product_id: str
    score: float


class FeatureOut(BaseModel):
    name: str
    value: float


class ExplanationOut(BaseModel):
    """score = expected_reward + exploration_bonus + popularity + boost; expected_reward =
    sum of top_features' values + other_features (docs/SERVING.md, explanations)."""

    product_id: str
    score: float
    expected_reward: float
    exploration_bonus: float
    popularity: float
    boost: float
    observations: int
    clicks: int
    parameter_version: int
    parameter_age_s: float | None
    top_features: list[FeatureOut]
    other_features: float


class RecommendResponse(BaseModel):
    request_id: str
    user_id: int
    ts_ms: int
    items: list[ItemOut]
    policy: str
    model_version: int
    propensity: float | None
    snapshot_age_s: float
    controls: list[str] | None = Field(default=None, description="The merchandising controls "
                                       "that applied (absent: none).")
    eligible_n: int | None = Field(default=None, description="Products the controls left "
                                   "eligible (absent: no control applied).")
    explanations: list[ExplanationOut] | None = None


class ServedOut(BaseModel):
    shown: int
    clicks: int
    ctr: float | None


class ProductOut(BaseModel):
    """One product's model (GET /products/{id})."""

    product_id: str
    category: str | None
    in_stock: bool
    observations: int
    clicks: int
    ctr: float | None
    parameter_version: int
    last_update_ms: int | None
    parameter_age_s: float | None
    top_features: list[FeatureOut]
    served: ServedOut


class OutOfStockIn(_Strict):
    product_ids: list[ProductId] = Field(max_length=100_000)


class OutOfStockOut(BaseModel):
    out_of_stock: list[str]


class FeedbackRequest(_Strict):
    request_id: str = Field(min_length=1, max_length=MAX_ID_LEN)
    product_id: str = Field(min_length=1, max_length=MAX_ID_LEN)
    at: Timestamp | None = None
    # what happened (contract.feedback.REWARD_KINDS), each learned with its configured reward
    kind: Literal[REWARD_KINDS] = "click"  # type: ignore[valid-type]


class FeedbackResponse(BaseModel):
    accepted: bool
    request_id: str
    product_id: str
    kind: str = "click"


class EventsOut(BaseModel):
    accepted: int
    published: int
    failed: int
    dropped: int
    queued: int


class CatalogOut(BaseModel):
    """The live catalog this instance follows (serving/catalog.py)."""

    version: int = Field(description="Catalog topic records read (its offset): equal versions, "
                                     "equal catalogs.")
    digest: str = Field(description="A hash of the catalog's content.")
    products: int = Field(description="Products with a record (in stock or not).")
    retired: int = Field(description="Retired products (hidden from every answer).")
    pending: int = Field(description="Products of the topic with no row here yet (rankable "
                                     "after a restart).")
    loaded: bool = Field(description="The topic was read to its end.")


class HealthResponse(BaseModel):
    status: Literal["ready", "degraded"]
    reasons: list[str]
    model_version: int
    snapshot_age_s: float
    products: int
    products_with_params: int
    notifications: str
    epoch: str | None = Field(default=None, description="The parameter store's generation "
                              "the snapshot belongs to (docs/PARAMS_FORMAT.md).")
    events: EventsOut
    catalog: CatalogOut | None = Field(default=None, description="The live catalog "
                                       "(docs/CATALOG.md); null when not followed.")


class ErrorResponse(BaseModel):
    detail: str
