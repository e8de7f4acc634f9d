"""Detection and irreversible redaction of faces and licence plates in single images.

No Dask and no session handling here: callers pass pixels or encoded bytes.
"""

from __future__ import annotations
