"""storage layer of airflow-provider-sky: one `Store` interface over file://, s3://, gs:// and az://
(plus https://<account>.blob.core.windows.net/), and a verified, incremental, parallel transfer engine.

No Airflow imports here: the hooks/operators pass connection values as explicit store options.
"""

from .base import (
    IntegrityError,
    MultipartUpload,
    NotFound,
    ObjectInfo,
    PartResult,
    StorageError,
    Store,
)
from .transfer import (
    TransferError,
    TransferEstimate,
    TransferProgress,
    TransferReport,
    VerifyReport,
    estimate_transfer,
    transfer,
    verify,
)
from .uri import StorageURI, open_uri, parse_uri, store_for, store_for_uri

__all__ = [
    "IntegrityError",
    "MultipartUpload",
    "NotFound",
    "ObjectInfo",
    "PartResult",
    "StorageError",
    "StorageURI",
    "Store",
    "TransferError",
    "TransferEstimate",
    "TransferProgress",
    "TransferReport",
    "VerifyReport",
    "estimate_transfer",
    "open_uri",
    "parse_uri",
    "store_for",
    "store_for_uri",
    "transfer",
    "verify",
]
