"""Object store: where received instances, results and model versions are kept, by key."""

from triage.store.keys import check_key, instance_key, sop_uid_of
from triage.store.local import LocalStore, ObjectStore, Staged, StagingStore, open_store

# S3Store (triage.store.s3) is imported where it is used, so that minio loads only for S3
__all__ = [
    "LocalStore",
    "ObjectStore",
    "Staged",
    "StagingStore",
    "check_key",
    "instance_key",
    "open_store",
    "sop_uid_of",
]
