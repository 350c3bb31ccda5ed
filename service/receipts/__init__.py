"""Receipt keys: the Ed25519 keys that sign receipts, from a file, with rotation.

The payload a receipt signs is built in :mod:`service.core.receipts` (pure); this
package holds what is not: the key file (generated in the data directory on the
embedded default, a Secret in a cluster), its rotation, and the signer that re-reads
it when it changes.
"""

from service.receipts._keyfile import (
    ALGORITHM,
    KeyRing,
    KeyStatus,
    ReceiptKey,
    ReceiptKeyFileError,
    ensure_key_file,
    public_view,
    read_key_file,
    write_key_file,
)
from service.receipts._signer import CHECK_INTERVAL, ReceiptSigner

__all__ = [
    "ALGORITHM",
    "CHECK_INTERVAL",
    "KeyRing",
    "KeyStatus",
    "ReceiptKey",
    "ReceiptKeyFileError",
    "ReceiptSigner",
    "ensure_key_file",
    "public_view",
    "read_key_file",
    "write_key_file",
]
