"""Where each kind of stored content lives in the object store (see docs/store-format.md)."""


def object_key(digest: bytes) -> str:
    return f"objects/{digest.hex()}"


def pieces_key(digest: bytes) -> str:
    """The piece index of the object `digest` (see digest.PIECE_SIZE)."""
    return f"pieces/{digest.hex()}"


def pack_key(pack_id: bytes) -> str:
    return f"packs/{pack_id.hex()}"


def index_key(pack_id: bytes) -> str:
    return f"index/{pack_id.hex()}"


STORE_MARKER = "artfs-store.json"  # written when a store is first used: {"format": 1, "created": …}


def damaged_marker(key: str) -> str:
    """Marks the stored object `key` damaged (artfs verify found it so): a publish of the same
    bytes stores it again and removes the mark."""
    return f"damaged/{key}"
