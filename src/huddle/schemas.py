"""Wire schemas (camelCase), separate from the ORM models. Create / Update / Public per role."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from huddle.clock import iso

T = TypeVar("T")

# The patterns say in the schema what the validators do (issue 14: the schema
# allowed what the API refused): no NUL character anywhere (PostgreSQL cannot
# store one), and names and titles need a character that is not whitespace
# (they are stripped, then may not be empty).
# Whitespace spelled out, so that every regex engine reading the schema (Rust's in
# pydantic and jsonschema-rs, Python's, ECMAScript's) agrees on it: Unicode
# White_Space plus the separators \x1c-\x1f that Python's str.isspace() adds.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACE_CLASS = r"\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT = r"^[^\x00]*$"
NONBLANK = rf"^[^\x00]*[^\x00{_SPACE_CLASS}][^\x00]*$"


def text(max_length: int, *, min_length: int = 0) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=TEXT)


def _strip(value: str) -> str:
    return value.strip(WHITESPACE)


def nonblank(max_length: int) -> tuple[StringConstraints, AfterValidator]:
    """A name or title: its length is checked as sent (what the schema's maxLength
    says), it needs a character that is not whitespace, and it is stored stripped."""
    return StringConstraints(max_length=max_length, pattern=NONBLANK), AfterValidator(_strip)


Name = Annotated[str, *nonblank(100)]
Password = Annotated[str, text(256, min_length=8)]
Title = Annotated[str, *nonblank(200)]
Description = Annotated[str, text(10_000)]
TeamDescription = Annotated[str, text(2_000)]
UTCTime = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""A time on the wire: ISO-8601 UTC with milliseconds and `Z` (SPEC §4)."""
# Ids and counters in bodies are JSON integers: not "1", not true, not 1.0.
Id = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
Version = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"


class Status(StrEnum):
    todo = "todo"
    in_progress = "in_progress"
    done = "done"


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


def storable_text(value: object) -> object:
    """Refuse a string with a NUL character: PostgreSQL's text types cannot hold one.

    JSON can spell it (`\\u0000`), and the driver's refusal surfaced as a 500;
    it is a validation error on every database. (Lone surrogates, `\\ud800`,
    never get this far: pydantic refuses them as invalid strings.)
    """
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def utc_datetime(value: datetime | None) -> datetime | None:
    """A due date in UTC (naive means UTC); one that leaves years 1-9999 in UTC is refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


DueDate = Annotated[datetime, AfterValidator(utc_datetime)]


class Wire(BaseModel):
    """A request body: camelCase on the wire, unknown fields refused, strings storable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", from_attributes=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable_text(value)


class Out(BaseModel):
    """A response body: camelCase, built from ORM rows; times as `UTCTime`."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", from_attributes=True
    )


class Page(BaseModel, Generic[T]):
    """One page of a list: follow `nextCursor` (null on the last page) as `?cursor=`."""

    items: list[T]
    nextCursor: str | None = None


# --- errors -----------------------------------------------------------------


class ErrorInfo(BaseModel):
    """What went wrong: a stable `code`, a human `message`, and sometimes `details`."""

    model_config = ConfigDict(title="ErrorInfo")

    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str = Field(examples=["The request is not valid."])
    details: Any = Field(
        None,
        description=(
            "Depends on the code: the fields at fault for VALIDATION_ERROR, "
            "`{current: Task}` for VERSION_CONFLICT, `{maxBody}` for PAYLOAD_TOO_LARGE."
        ),
    )


class Error(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(title="Error")

    error: ErrorInfo


# --- auth -------------------------------------------------------------------


class RegisterIn(Wire):
    email: EmailStr = Field(
        description=(
            "compared case-insensitively; addresses at special-use domains "
            "(.test, .local, .localhost, .invalid, .arpa, .onion) are refused"
        )
    )
    password: Password
    name: Name


class LoginIn(Wire):
    email: Annotated[str, text(320, min_length=1)]
    password: Annotated[str, text(256, min_length=1)]


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    refresh_token: Annotated[str, text(8192, min_length=1)] = Field(
        validation_alias="refresh_token"
    )

    @field_validator("refresh_token", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable_text(value)


class TokenPair(BaseModel):
    """RFC 6749's token response: snake_case, unlike the rest of the API."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - RFC 6749 field, not a secret
    expires_in: int = Field(description="seconds until the access token expires")


class PasswordChangeIn(Wire):
    current_password: Annotated[str, text(256, min_length=1)]
    new_password: Password


# --- users, teams, members --------------------------------------------------


class UserOut(Out):
    id: int
    email: str
    name: str
    is_admin: bool
    created_at: UTCTime


class TeamIn(Wire):
    name: Name
    description: TeamDescription = ""


class TeamPatch(Wire):
    name: Name | None = None
    description: TeamDescription | None = None


class TeamOut(Out):
    id: int
    name: str
    description: str
    created_at: UTCTime
    role: Role | None = Field(None, description="the caller's role in the team")


def _public_member_schema(schema: dict[str, Any]) -> None:
    """The schema everyone may use: `email` required, `userId` left out (administrators only)."""
    schema.get("properties", {}).pop("userId", None)
    schema["required"] = ["email"]


class MemberIn(Wire):
    """Add a member: `email` (the address they registered with), or `userId`.

    `userId` is accepted from global administrators only (the route checks
    the caller), so that nobody can walk user ids to collect other people's
    addresses; anyone else gets 422, so the published schema leaves it out.
    Exactly one of the two.
    """

    model_config = ConfigDict(json_schema_extra=_public_member_schema)

    email: Annotated[str, *nonblank(320)] | SkipJsonSchema[None] = None
    user_id: Id | SkipJsonSchema[None] = None
    role: Role = Role.member

    @model_validator(mode="after")
    def _exactly_one(self) -> MemberIn:
        if (self.email is None) == (self.user_id is None):
            raise ValueError("give the new member's `email`")
        return self


class MemberPatch(Wire):
    role: Role


class MemberOut(Out):
    team_id: int
    user_id: int
    role: Role
    user: UserOut
    joined_at: UTCTime


# --- tasks --------------------------------------------------------------------


class TaskIn(Wire):
    title: Title
    description: Description = ""
    status: Status = Status.todo
    priority: Priority = Priority.medium
    assignee_id: Id | None = None
    due_date: DueDate | None = None


class TaskPatch(Wire):
    """Any of the fields; left out means unchanged. `assigneeId` and `dueDate` may be
    null (unassign, no due date); the others may not (the route refuses null)."""

    title: Title | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    status: Status | SkipJsonSchema[None] = None
    priority: Priority | SkipJsonSchema[None] = None
    assignee_id: Id | None = None
    due_date: DueDate | None = None
    version: Version | SkipJsonSchema[None] = Field(
        None, description="the version you edited; a stale one answers 409 VERSION_CONFLICT"
    )


class TaskOut(Out):
    id: int
    team_id: int
    title: str
    description: str
    status: Status
    priority: Priority
    assignee_id: int | None
    due_date: UTCTime | None
    created_by: int | None
    created_at: UTCTime
    updated_at: UTCTime
    version: int


def wire(model: BaseModel) -> dict[str, object]:
    """The JSON-ready camelCase dict of a schema instance (what REST and events send)."""
    return model.model_dump(mode="json", by_alias=True)
