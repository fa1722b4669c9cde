"""W&B manifests in and out: `artfs wandb import` / `artfs wandb export`.

A W&B manifest (what `Artifact.manifest.to_manifest_json()` returns) names each stored
file by its MD5 (base64) and each reference by its source's pin:

    {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
     "storagePolicyConfig": {"storageLayout": "V2"},
     "contents": {"a.txt": {"digest": "<md5 b64>", "size": 6},
                  "raw/x": {"digest": "<etag>", "ref": "s3://b/raw/x", "size": 9,
                            "extra": {"etag": "<etag>", "versionID": "…"}}}}

Import checks every stored file's size and MD5 before anything is stored (one mismatch
refuses the whole import, naming every file that differs) and keeps references as
references with W&B's pins. Export computes the MD5s (artfs itself keys content by
blake3 and never computes MD5 on publish) and keeps the result beside the version,
as import keeps the manifest it was given: `wandb/manifests/<artfs manifest digest>.json`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from typing import Callable, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import blake3

from artfs.errors import InvalidInput, NotFound
from artfs.names import ArtifactName, check_alias, normalize_path
from artfs.references import access
from artfs.store.manifest import UNKNOWN_SIZE, Entry
from artfs.versions.download import Downloader
from artfs.versions.publish import FileSource

if TYPE_CHECKING:
    from artfs.api.native import Store
    from artfs.store.registry import VersionRecord

POLICY = "wandb-storage-policy-v1"
_HEADER = b"wandb-artifact-manifest-v1\n"
MAX_LISTED = 20  # mismatching files named in one error line
EXPORT_BATCH = 1 << 30


def sidecar_key(manifest_hex: str) -> str:
    return f"wandb/manifests/{manifest_hex}.json"


def md5_b64(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while buf := f.read(8 << 20):
            h.update(buf)
    return base64.b64encode(h.digest()).decode()


def _md5_and_blake3(path: str) -> tuple[str, bytes]:
    m, b = hashlib.md5(), blake3.blake3()
    with open(path, "rb") as f:
        while buf := f.read(8 << 20):
            m.update(buf)
            b.update(buf)
    return base64.b64encode(m.digest()).decode(), b.digest()


def wandb_digest(doc: dict[str, Any]) -> str:
    """The digest W&B gives a manifest: MD5 over 'path:digest' lines in path order."""
    h = hashlib.md5(_HEADER)
    for path, entry in sorted(doc["contents"].items()):
        h.update(f"{path}:{entry['digest']}\n".encode())
    return h.hexdigest()


def _document(contents: dict[str, dict]) -> dict[str, Any]:
    return {
        "version": 1,
        "storagePolicy": POLICY,
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": dict(sorted(contents.items())),
    }


# -- export -----------------------------------------------------------------------------
def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def _ref_entry(e: Entry, md5: str | None) -> dict[str, Any]:
    ref = e.ref or {}
    uri = ref["uri"]
    pin = {k: v for k, v in ref.items() if k != "uri"}
    out: dict[str, Any] = {"digest": uri, "ref": uri}
    if not pin:  # checksum=False: W&B's digest is the URI itself
        return out
    if e.size >= 0:
        out["size"] = e.size
    scheme = _scheme(uri)
    etag = str(pin.get("etag", "")).strip('"')
    if scheme == "s3" and etag:
        extra = {"etag": etag}
        if pin.get("version_id"):
            extra["versionID"] = pin["version_id"]
        out.update(digest=etag, extra=extra)
    elif scheme == "gs" and (pin.get("gcs_etag") or etag or pin.get("generation")):
        out["digest"] = pin.get("gcs_etag") or etag or str(pin["generation"])  # W&B's: the JSON API's etag
        if pin.get("generation"):
            g = str(pin["generation"])
            out["extra"] = {"versionID": int(g) if g.isdigit() else g}
    elif scheme in ("http", "https") and pin.get("etag"):
        out.update(digest=etag, extra={"etag": pin["etag"]})
    elif scheme == "file" and md5:
        out["digest"] = md5
    return out


def _batches(indices: list[int], sizes) -> list[list[int]]:
    """Runs of entries of about EXPORT_BATCH bytes: export holds one run on disk at a time."""
    out: list[list[int]] = [[]]
    total = 0
    for i in indices:
        if out[-1] and total + max(sizes[i], 0) > EXPORT_BATCH:
            out.append([])
            total = 0
        out[-1].append(i)
        total += max(sizes[i], 0)
    return [b for b in out if b]


def export_manifest(store: Store, rec: VersionRecord) -> dict[str, Any]:
    """The W&B manifest of version `rec` (MD5s computed once, then kept beside it)."""
    key = sidecar_key(rec.manifest)
    try:
        doc = json.loads(store.objects.get(key))
        if isinstance(doc, dict) and isinstance(doc.get("contents"), dict):
            return doc
    except (NotFound, ValueError):
        pass
    m = store.manifest(rec)
    md5s: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="artfs-wandb-export-") as tmp:
        for _, part in m.parts():  # a sharded manifest a shard at a time
            stored = [i for i in range(len(part)) if i not in part.refs]
            for batch in _batches(stored, part.sizes):
                Downloader(store.objects).download(part, batch, tmp)  # verified against blake3 as it is written
                for i in batch:
                    local = os.path.join(tmp, part.paths[i])
                    md5s[part.paths[i]] = md5_b64(local)
                    os.unlink(local)
            for i, ref in part.refs.items():
                if _scheme(ref["uri"]) == "file" and len(ref) > 1:
                    e = part.entry(i)
                    local = os.path.join(tmp, "ref-file")
                    access.fetch_to_file(e, local)  # checked against its pin
                    md5s[e.path] = md5_b64(local)
                    os.unlink(local)
    contents = {}
    for e in m:
        contents[e.path] = (
            _ref_entry(e, md5s.get(e.path)) if e.is_reference else {"digest": md5s[e.path], "size": e.size}
        )
    doc = _document(contents)
    store.objects.put(key, json.dumps(doc, sort_keys=True).encode())
    return doc


# -- import -----------------------------------------------------------------------------
def _contents(doc: Any) -> dict[str, dict]:
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("contents"), dict):
        raise InvalidInput("not a W&B artifact manifest (expected version 1 with 'contents')")
    if doc.get("storagePolicy", POLICY) != POLICY:
        raise InvalidInput(f"unknown W&B storage policy {doc.get('storagePolicy')!r}")
    for path, ent in doc["contents"].items():
        if not isinstance(ent, dict) or not isinstance(ent.get("digest"), str):
            raise InvalidInput(f"W&B manifest entry {path!r} has no digest")
        alg = str((ent.get("extra") or {}).get("alg", "MD5"))  # W&B marks non-MD5 entries this way
        if alg.upper() != "MD5":
            raise InvalidInput(f"{path!r} has a {alg} digest: artfs imports MD5 manifests (W&B's default)")
    return doc["contents"]


def _reference(path: str, ent: dict, problems: list[str]) -> Entry | None:
    uri, digest = ent["ref"], ent["digest"]
    size = ent.get("size")
    size = int(size) if isinstance(size, int) and size >= 0 else UNKNOWN_SIZE
    extra = ent.get("extra") or {}
    scheme = _scheme(uri)
    if digest == uri and not extra:  # added with checksum=False: nothing pins it
        return Entry(path, UNKNOWN_SIZE, b"", ref={"uri": uri})
    if scheme == "s3":
        etag = extra.get("etag") or digest
        ref = {"uri": uri, "etag": f'"{etag.strip(chr(34))}"'}
        if extra.get("versionID"):
            ref["version_id"] = str(extra["versionID"])
        return Entry(path, size, b"", ref=ref)
    if scheme == "gs":
        # The generation pins the object (W&B records it as versionID); W&B's digest is the
        # JSON API's etag, kept for export.
        if not extra.get("versionID"):
            problems.append(f"{path}: gs:// reference without a generation (W&B's versionID) cannot be pinned")
            return None
        return Entry(path, size, b"", ref={"uri": uri, "generation": str(extra["versionID"]), "gcs_etag": digest})
    if scheme in ("http", "https"):
        ref = {"uri": uri}
        if extra.get("etag"):
            ref["etag"] = extra["etag"]
        return Entry(path, size, b"", ref=ref)
    if scheme == "file":
        try:
            entry = access.resolve(uri, path, True, 1)[0]
            local = unquote(urlsplit(uri).path)  # resolve() has just checked it is a local file
            if entry.size != size and size != UNKNOWN_SIZE:
                problems.append(f"{path}: {uri} has {entry.size} bytes, the manifest says {size}")
            elif md5_b64(local) != digest:
                problems.append(f"{path}: {uri} does not match its MD5")
            return entry
        except (NotFound, InvalidInput, OSError) as e:
            problems.append(f"{path}: {e}")
            return None
    problems.append(f"{path}: cannot import a {scheme or 'schemeless'} reference ({uri})")
    return None


def import_manifest(
    store: Store,
    doc: Any,
    files_dir: str,
    name: ArtifactName,
    type_: str,
    aliases: list[str] | tuple[str, ...] = (),
    description: str | None = None,
    metadata: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> VersionRecord:
    """Makes the next version of `name` from a W&B manifest and the files under `files_dir`
    (laid out as `artifact.download()` lays them). Every stored file's size and MD5 is
    checked first; any mismatch refuses the import, naming every such file, and stores nothing."""
    from artfs.versions.lifecycle import delete_version

    contents = _contents(doc)
    aliases = [check_alias(a) for a in aliases if a != "latest"]
    if not os.path.isdir(files_dir):
        raise NotFound(f"--files {files_dir}: no such folder")
    files: list[FileSource] = []
    refs: list[Entry] = []
    problems: list[str] = []
    expected: dict[str, bytes] = {}
    kept: dict[str, dict] = {}
    for raw_path, ent in sorted(contents.items()):
        path = normalize_path(raw_path)
        kept[path] = {k: v for k, v in ent.items() if k in ("digest", "ref", "size", "extra") and v not in (None, {})}
        if ent.get("ref"):
            e = _reference(path, ent, problems)
            if e is not None:
                refs.append(e)
            continue
        local = os.path.join(files_dir, path)
        if not os.path.isfile(local):
            problems.append(f"{path}: missing from {files_dir}")
            continue
        size = os.path.getsize(local)
        if isinstance(ent.get("size"), int) and size != ent["size"]:
            problems.append(f"{path}: {size} bytes, the manifest says {ent['size']}")
            continue
        md5, digest = _md5_and_blake3(local)
        if md5 != ent["digest"]:
            problems.append(f"{path}: MD5 {md5} does not match the manifest's {ent['digest']}")
            continue
        files.append(FileSource(path, os.path.abspath(local)))
        expected[path] = digest
    if problems:
        listed = "; ".join(problems[:MAX_LISTED]) + (
            f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        )
        raise InvalidInput(
            f"import refused, nothing stored: {len(problems)} file(s) do not match the manifest: {listed}"
        )
    if not files and not refs:
        raise InvalidInput("the W&B manifest lists no files")
    latest = store.registry.latest(name)
    result = store.publish(
        name,
        type_,
        files,
        refs,
        base=latest,
        same_as=latest,
        description=description,
        metadata=metadata,
        aliases=aliases,
        progress=progress,
    )
    m = store.manifest(result.version)
    changed = sorted(p for p, d in expected.items() if (e := m.get(p)) is None or e.digest != d)
    if changed:  # a file changed between its MD5 check and its upload
        if result.created:
            delete_version(store.registry, result.version, force=True)
        raise InvalidInput(f"import refused: {', '.join(changed[:MAX_LISTED])} changed while being imported")
    store.objects.put(sidecar_key(result.version.manifest), json.dumps(_document(kept), sort_keys=True).encode())
    return result.version
