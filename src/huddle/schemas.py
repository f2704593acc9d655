"""Wire schemas (camelCase), separate from the ORM models. Create / Update / Public per role."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    Strict,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from huddle.clock import iso

T = TypeVar("T")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=10_000)]
TeamDescription = Annotated[str, StringConstraints(max_length=2_000)]
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
    """camelCase on the wire, unknown fields refused, strings storable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", from_attributes=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable_text(value)


class Out(Wire):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", from_attributes=True
    )

    @field_serializer("*", when_used="json")
    def _times(self, value: object) -> object:
        return iso(value) if isinstance(value, datetime) else value


class Page(BaseModel, Generic[T]):
    items: list[T]
    nextCursor: str | None = None


# --- auth -------------------------------------------------------------------


class RegisterIn(Wire):
    email: EmailStr
    password: Password
    name: Name


class LoginIn(Wire):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        validation_alias="refresh_token"
    )

    @field_validator("refresh_token", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable_text(value)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - RFC 6749 field, not a secret
    expires_in: int


class PasswordChangeIn(Wire):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Password


# --- users, teams, members --------------------------------------------------


class UserOut(Out):
    id: int
    email: str
    name: str
    is_admin: bool
    created_at: datetime


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
    created_at: datetime
    role: Role | None = None


class MemberIn(Wire):
    """Add a member: `email` (the address they registered with), or `userId`.

    `userId` is accepted from global administrators only (the route checks
    the caller), so that nobody can walk user ids to collect other people's
    addresses. Exactly one of the two.
    """

    email: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
        | None
    ) = None
    user_id: Id | None = None
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
    joined_at: datetime


# --- tasks --------------------------------------------------------------------


class TaskIn(Wire):
    title: Title
    description: Description = ""
    status: Status = Status.todo
    priority: Priority = Priority.medium
    assignee_id: Id | None = None
    due_date: DueDate | None = None


class TaskPatch(Wire):
    title: Title | None = None
    description: Description | None = None
    status: Status | None = None
    priority: Priority | None = None
    assignee_id: Id | None = None
    due_date: DueDate | None = None
    version: Version | None = None


class TaskOut(Out):
    id: int
    team_id: int
    title: str
    description: str
    status: Status
    priority: Priority
    assignee_id: int | None
    due_date: datetime | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    version: int


def wire(model: BaseModel) -> dict[str, object]:
    """The JSON-ready camelCase dict of a schema instance (what REST and events send)."""
    return model.model_dump(mode="json", by_alias=True)
