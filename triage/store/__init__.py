"""Object store: where received instances, results and model versions are kept, by key."""

from triage.store.local import LocalStore, ObjectStore, check_key, instance_key, open_store

__all__ = ["LocalStore", "ObjectStore", "check_key", "instance_key", "open_store"]
