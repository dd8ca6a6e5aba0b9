"""Python client for Strata, the multi-tenant memory server for AI agents.

- :class:`Strata` / :class:`AsyncStrata`: a tenant's memories, search, collections and audit
  log; the tenant comes from the API key.
- :class:`StrataAdmin` / :class:`AsyncStrataAdmin`: the operator's tenants, keys and audit.
- :mod:`strata_client.errors`: one exception class per family of the server's error codes.
- :mod:`strata_client.langchain`: a LangChain ``VectorStore`` (``pip install
  strata-client[langchain]``).
"""

from ._scope import Scope, UserMatch
from ._version import __version__
from .admin import AsyncStrataAdmin, BackupFailedError, MigrationFailedError, StrataAdmin
from .aio import AsyncStrata
from .client import Strata
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ScopeForbiddenError,
    ServerError,
    StrataConnectionError,
    StrataError,
    TenantMismatchError,
    TenantSuspendedError,
)
from .models import (
    AdaptiveExplain,
    ApiKey,
    AuditRow,
    BackupStatus,
    Collection,
    Confidence,
    ConfidenceInput,
    CreatedKey,
    Explain,
    Link,
    MigrationReport,
    MigrationStatus,
    NewRecord,
    Page,
    PurgedTenant,
    RecallHit,
    RecallResult,
    Record,
    RecordLinks,
    RepairReport,
    RotatedKey,
    RunningMigration,
    SearchHit,
    SearchResult,
    Share,
    Tenant,
    TenantLimits,
    TenantResidency,
    TenantUsage,
    VerifyReport,
    WriteResult,
)
from .retry import RetryPolicy

__all__ = [
    "__version__",
    "Strata",
    "AsyncStrata",
    "StrataAdmin",
    "AsyncStrataAdmin",
    "RetryPolicy",
    "Scope",
    "UserMatch",
    # Models.
    "AdaptiveExplain",
    "ApiKey",
    "AuditRow",
    "Collection",
    "Confidence",
    "ConfidenceInput",
    "CreatedKey",
    "RotatedKey",
    "Explain",
    "MigrationReport",
    "MigrationStatus",
    "RepairReport",
    "RunningMigration",
    "BackupStatus",
    "NewRecord",
    "Link",
    "Page",
    "PurgedTenant",
    "RecallHit",
    "RecallResult",
    "Record",
    "RecordLinks",
    "SearchHit",
    "SearchResult",
    "Share",
    "Tenant",
    "TenantLimits",
    "TenantResidency",
    "TenantUsage",
    "VerifyReport",
    "WriteResult",
    # Errors.
    "StrataError",
    "MigrationFailedError",
    "BackupFailedError",
    "StrataConnectionError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "TenantMismatchError",
    "ScopeForbiddenError",
    "TenantSuspendedError",
    "QuotaExceededError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "OverloadedError",
]
