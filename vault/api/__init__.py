"""HTTP: the public ingest app and the internal app, auth dependencies, and the error mapping."""

from vault.api._apps import create_internal_app, create_public_app
from vault.api._errors import ErrorBody, status_of

__all__ = ["ErrorBody", "create_internal_app", "create_public_app", "status_of"]
