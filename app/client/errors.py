"""A client's errors: RFC 9457 problems as typed exceptions, plus the client's own failures."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from app.client.keys import ApiKey


class DistillError(Exception):
    """Every error the client raises."""


class Unreachable(DistillError):
    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(
            f"cannot reach the distill API at {url}: {cause}. Is the service running "
            "(scripts/demo.sh, docker compose up), and is --url (or $DISTILL_URL) right?"
        )


@dataclass(frozen=True)
class FieldError:
    pointer: str  # JSON pointer into the request, e.g. /method/temperature
    detail: str
    type: str = "value_error"
    in_: str = "body"

    def __str__(self) -> str:
        return f"{self.pointer}: {self.detail}"


class ApiError(DistillError):
    """The API answered with a problem (application/problem+json)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str = "about:blank",
        instance: str | None = None,
        errors: tuple[FieldError, ...] = (),
        retry_after: str | None = None,
        key: ApiKey | None = None,
    ) -> None:
        self.status, self.title, self.detail, self.key = status, title, detail, key
        self.type, self.instance, self.errors, self.retry_after = type_, instance, errors, retry_after
        super().__init__(self.explain())

    @property
    def pointers(self) -> list[str]:
        return [e.pointer for e in self.errors]

    def explain(self) -> str:
        lines = [f"{self.status} {self.title}: {self.detail}"]
        lines += [f"  {e}" for e in self.errors]
        if self.retry_after:
            lines.append(f"  retry after {self.retry_after} s")
        return "\n".join(lines)

    @classmethod
    def from_response(cls, response: httpx.Response, key: ApiKey) -> ApiError:
        body = _json_or_none(response)
        if not isinstance(body, dict):
            body = {
                "title": response.reason_phrase or "HTTP error",
                "detail": (response.text or "").strip()[:500] or "no details given",
            }
        errors = tuple(
            FieldError(
                str(e.get("pointer", "")),
                str(e.get("detail", "")),
                str(e.get("type", "value_error")),
                str(e.get("in", "body")),
            )
            for e in body.get("errors") or ()
            if isinstance(e, dict)
        )
        kind = AuthError if response.status_code == 401 else cls
        return kind(
            response.status_code,
            str(body.get("title", "")),
            str(body.get("detail", "")),
            type_=str(body.get("type", "about:blank")),
            instance=body.get("instance"),
            errors=errors,
            retry_after=response.headers.get("retry-after"),
            key=key,
        )


class AuthError(ApiError):
    """401: no key, or one the service does not know; says where the key was looked for."""

    def explain(self) -> str:
        text = super().explain()
        if self.key is None:
            return text
        if self.key.value is None:
            return (
                f"{text}\n  The client sent no key: {self.key.where()}.\n  Pass --key, set "
                "DISTILL_API_KEY, or set DISTILL_HOME to the folder of the service that wrote api-key."
            )
        return f"{text}\n  The client sent {self.key.where()}: the service does not know it (or it was revoked)."


class ChecksumMismatch(DistillError):
    """A download's sha256 is not the one the service recorded; the file was not kept."""

    def __init__(self, filename: str, expected: str, actual: str) -> None:
        self.filename, self.expected, self.actual = filename, expected, actual
        super().__init__(
            f"{filename}: sha256 mismatch (expected {expected}, got {actual}); the "
            "file was not kept. Download it again; if it persists, the stored copy is damaged."
        )


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None
