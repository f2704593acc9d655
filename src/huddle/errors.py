"""The error hierarchy. Every failure a client can see carries a stable code.

    HuddleError                      code, HTTP status, message, details
    ├── ValidationFailed             VALIDATION_ERROR (422)
    ├── BadRequest                   BAD_REQUEST (400)
    ├── AuthError                    401 family; also sent as `authentication_error`
    │   ├── InvalidCredentials       INVALID_CREDENTIALS
    │   ├── TokenMissing             TOKEN_MISSING
    │   ├── TokenExpired             TOKEN_EXPIRED
    │   ├── TokenInvalid             TOKEN_INVALID
    │   ├── TokenRevoked             TOKEN_REVOKED
    │   ├── RefreshTokenExpired      REFRESH_TOKEN_EXPIRED
    │   ├── RefreshTokenInvalid      REFRESH_TOKEN_INVALID
    │   └── RefreshTokenReused       REFRESH_TOKEN_REUSED
    ├── Forbidden                    FORBIDDEN (403)
    ├── NotFound                     NOT_FOUND (404)
    │   └── UserNotFound             USER_NOT_FOUND (no user with that email)
    ├── Conflict                     409
    │   ├── EmailTaken               EMAIL_TAKEN
    │   └── VersionConflict          VERSION_CONFLICT (details: the current task)
    ├── PayloadTooLarge              PAYLOAD_TOO_LARGE (413, a body above MAX_BODY)
    ├── RateLimited                  RATE_LIMITED (429, retry_after in ms)
    ├── ConnectionLimit              CONNECTION_LIMIT (429)
    ├── DatabaseUnavailable          DATABASE_UNAVAILABLE (503)
    └── BackendUnavailable           BACKEND_UNAVAILABLE (503)

`ConfigError` is separate: it stops the process at start and is never sent to
a client.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConfigError(Exception):
    """An invalid setting; the message is one line naming the variable."""


class HuddleError(Exception):
    """Base of every error a client may receive."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Internal server error."

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InternalError(HuddleError):
    """Something unexpected failed; the client learns nothing more."""


class ValidationFailed(HuddleError):
    """The request body, query or path did not match the schema."""

    code = "VALIDATION_ERROR"
    status = 422
    default_message = "The request is not valid."


class BadRequest(HuddleError):
    """A socket payload or request of the wrong shape."""

    code = "BAD_REQUEST"
    status = 400
    default_message = "The request is malformed."


class AuthError(HuddleError):
    """Authentication failed; `action` tells a socket client what to do next."""

    status = 401
    action: ClassVar[str] = "LOGIN"


class InvalidCredentials(AuthError):
    """Wrong email or password."""

    code = "INVALID_CREDENTIALS"
    default_message = "Invalid email or password."


class TokenMissing(AuthError):
    """No access token was presented."""

    code = "TOKEN_MISSING"
    default_message = "Authentication required."


class TokenExpired(AuthError):
    """The access token's `exp` has passed."""

    code = "TOKEN_EXPIRED"
    action = "REFRESH_TOKEN"
    default_message = "Token has expired. Please refresh your session or log in again."


class TokenInvalid(AuthError):
    """Bad signature, malformed, wrong algorithm/type/issuer/audience, or unknown user."""

    code = "TOKEN_INVALID"
    default_message = "Token is invalid."


class TokenRevoked(AuthError):
    """Issued before the user's sessions were revoked."""

    code = "TOKEN_REVOKED"
    default_message = "Token has been revoked. Please log in again."


class RefreshTokenExpired(AuthError):
    """The refresh token's lifetime has passed."""

    code = "REFRESH_TOKEN_EXPIRED"
    default_message = "Refresh token has expired. Please log in again."


class RefreshTokenInvalid(AuthError):
    """The refresh token is unknown, malformed, or revoked."""

    code = "REFRESH_TOKEN_INVALID"
    default_message = "Refresh token is invalid. Please log in again."


class RefreshTokenReused(AuthError):
    """An already used refresh token was presented; its family is now revoked."""

    code = "REFRESH_TOKEN_REUSED"
    default_message = "Refresh token was already used; all sessions from that login are revoked."


class Forbidden(HuddleError):
    """The caller is known but may not do this."""

    code = "FORBIDDEN"
    status = 403
    default_message = "You may not do this."


class ServiceCredentialRequired(HuddleError):
    """An internal route (`/api/internal/…`) called with a user's token: never accepted."""

    code = "SERVICE_CREDENTIAL_REQUIRED"
    status = 403
    default_message = "This route takes the service credential, not a user token."


class ServiceCredentialInvalid(HuddleError):
    """An internal route called without the service credential, or with a wrong one."""

    code = "SERVICE_CREDENTIAL_INVALID"
    status = 401
    default_message = "The service credential is missing or wrong."


class NotFound(HuddleError):
    """The resource does not exist, or the caller may not see it."""

    code = "NOT_FOUND"
    status = 404
    default_message = "Not found."


class UserNotFound(NotFound):
    """No (active) user has that email address."""

    code = "USER_NOT_FOUND"
    default_message = "No user with that email address."


class Conflict(HuddleError):
    """The request conflicts with the current state."""

    code = "CONFLICT"
    status = 409
    default_message = "Conflict."


class EmailTaken(Conflict):
    """A user with that email exists."""

    code = "EMAIL_TAKEN"
    default_message = "That email is already registered."


class VersionConflict(Conflict):
    """The task changed since the version the client edited."""

    code = "VERSION_CONFLICT"
    default_message = "The task was changed by someone else; the current version is attached."


class PayloadTooLarge(HuddleError):
    """The request body is larger than MAX_BODY."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413
    default_message = "The request body is too large."


class RateLimited(HuddleError):
    """Too many attempts; retry after `retry_after_ms`."""

    code = "RATE_LIMITED"
    status = 429
    action: ClassVar[str] = "RETRY"
    default_message = "Too many attempts. Please wait and try again."

    def __init__(self, retry_after_ms: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = max(0, int(retry_after_ms))


class ConnectionLimit(HuddleError):
    """The user already has the maximum number of open sockets."""

    code = "CONNECTION_LIMIT"
    status = 429
    action: ClassVar[str] = "RETRY"
    default_message = "Too many open connections for this user."


class DatabaseUnavailable(HuddleError):
    """The database cannot be reached."""

    code = "DATABASE_UNAVAILABLE"
    status = 503
    default_message = "The database is unavailable. Please try again shortly."


class BackendUnavailable(HuddleError):
    """The API behind a gateway cannot be reached."""

    code = "BACKEND_UNAVAILABLE"
    status = 503
    default_message = "The backend is unavailable."
