"""CLI verbs for drafts: draft (make one of any version) and commit."""

from __future__ import annotations

import errno
import json
import os
import secrets

import click

from artfs.cli.format import note, progress_bar
from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.names import check_name, parse_artifact_name, parse_spec
from artfs.store.registry import check_metadata

COMMIT_XATTR = "user.artfs.commit"
RESULT_XATTR = "user.artfs.result."


@click.command()
@click.argument("spec")
@click.option("--name", "-n", "draft_name", default=None, help="Draft name (default: a fresh one).")
@click.option("--type", "-t", "type_", default=None, help="Type, for a draft of a new artifact.")
@click.pass_obj
def draft(ctx, spec, draft_name, type_):
    """Make a draft of a version (p/a:vN, p/a:alias) or of a new artifact (p/a).

    It appears in mounts of this cache as MOUNT/p/a/drafts/NAME."""
    from artfs.drafts.store import DraftStore

    parsed = parse_spec(spec)
    reg = ctx.store.registry
    draft_name = check_name(draft_name, "draft name") if draft_name else "d-" + secrets.token_hex(3)
    existing_type = reg.artifact_type(parsed.artifact)
    if type_ and existing_type and type_ != existing_type:
        raise InvalidInput(f"{parsed.artifact} already exists with type {existing_type!r}, not {type_!r}")
    if existing_type is None and parsed.selector:
        raise InvalidInput(
            f"artifact {parsed.artifact} does not exist (make a draft of a new one with just {parsed.artifact})"
        )
    base = reg.resolve(parsed) if existing_type and reg.versions(parsed.artifact) else None
    ctx.store.create_draft(DraftStore(ctx.store.cache_dir), parsed.artifact, draft_name, base, type_ or existing_type)
    click.echo(f"{parsed.artifact}/drafts/{draft_name}")


@click.command()
@click.argument("path")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias for the new version (repeatable).")
@click.option("--description", "-d")
@click.option("--metadata", "-m", help="JSON object.")
@click.option("--type", "-t", "type_", default=None, help="Type (needed for the first version of an artifact).")
@click.option("--name", "-n", default=None, help="PROJECT/ARTIFACT, when PATH is a plain folder.")
@click.pass_obj
def commit(ctx, path, aliases, description, metadata, type_, name):
    """Commit a draft (a mounted MOUNT/p/a/drafts/D, or p/a/drafts/D) or a plain folder as the next version."""
    meta = check_metadata(metadata) if metadata is not None else None
    options = {"aliases": list(aliases), "description": description, "metadata": meta, "type_": type_}
    if _mounted_draft(path):
        click.echo(_commit_through_mount(path, options))
        return
    if os.path.isdir(path):
        if not name:
            raise InvalidInput(f"{path} is a plain folder: give --name PROJECT/ARTIFACT to commit it")
        click.echo(_commit_folder(ctx, path, parse_artifact_name(name), options))
        return
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[2] == "drafts" and not os.path.isabs(path):
        click.echo(_commit_stored_draft(ctx, parse_artifact_name("/".join(parts[:2])), parts[3], path, options))
        return
    if not os.path.exists(path):  # (with --name a plain folder was meant)
        raise NotFound(f"no {'folder' if name else 'draft'} at {path}")
    raise InvalidInput(f"{path}: not a draft folder in a mount, a plain folder, or PROJECT/ARTIFACT/drafts/NAME")


def _mounted_draft(path: str) -> bool:
    try:
        os.statvfs(path)  # reaches the daemon, even when the kernel has the path's attributes cached
        os.getxattr(path, "user.artfs.draft")
        return True
    except OSError as e:
        if e.errno in (errno.ECONNABORTED, errno.ENOTCONN):
            raise ArtfsError(
                f"the mount serving {path} is not running (its daemon stopped): mount it again, then commit"
            ) from None
        return False


def _commit_through_mount(path: str, options: dict) -> str:
    """The mount's daemon owns the draft: ask it to commit, then read back the outcome."""
    from artfs.store.registry import creator_info

    token = secrets.token_hex(8)
    parent = os.path.dirname(os.path.abspath(path).rstrip("/"))
    # The version is this process's (its run: ARTFS_RUN_ID, SLURM_JOB_ID…), not the daemon's.
    request = {"token": token, **options, "creator": creator_info()}
    try:
        os.setxattr(path, COMMIT_XATTR, json.dumps(request).encode())
        failure = None
    except OSError as e:
        failure = e
    try:
        outcome = json.loads(os.getxattr(parent, RESULT_XATTR + token))
    except OSError:
        if failure is not None and failure.errno in (errno.ECONNABORTED, errno.ENOTCONN):
            outcome = {
                "error": f"the mount serving {path} stopped during the commit: mount it again and run "
                "the same commit (it finishes the version, or makes it if none was made)"
            }
        else:
            outcome = {"error": os.strerror(failure.errno) if failure and failure.errno else "the mount gave no answer"}
    if "error" in outcome:
        raise ArtfsError(outcome["error"])
    return outcome["version"]


def _commit_folder(ctx, path: str, artifact, options: dict) -> str:
    from artfs.versions.sources import walk_sources

    reg = ctx.store.registry
    latest = reg.latest(artifact)
    files = walk_sources(path, None)
    if not files:
        raise InvalidInput(f"nothing to commit: {path} has no files")
    total = sum(os.path.getsize(f.local) for f in files)
    with progress_bar(total, "hashing and uploading") as bar:
        result = ctx.store.publish(
            artifact,
            options["type_"] or reg.artifact_type(artifact),
            files,
            base=latest,
            same_as=latest,
            description=options["description"],
            metadata=options["metadata"],
            aliases=options["aliases"],
            progress=bar,
        )
    return str(result.version)


def _commit_stored_draft(ctx, artifact, draft_name: str, path: str, options: dict) -> str:
    """A draft of this host's cache, PROJECT/ARTIFACT/drafts/NAME, that no mount serves."""
    import fcntl

    from artfs.drafts.store import DraftStore

    drafts = DraftStore(ctx.store.cache_dir)
    if not drafts.exists(artifact, draft_name):
        if done := drafts.committed_as(artifact, draft_name):
            note(f"artfs: {artifact}/drafts/{draft_name} was already committed")
            return done
        raise NotFound(f"no draft at {path}")
    with open(os.path.join(drafts.root, ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            # (Which mount serves this cache is not known for sure: a mount of another cache
            # may show a draft of the same name. A candidate is named, never committed.)
            served = _served_at(artifact, draft_name)
            where = (
                f"commit it there, e.g. {served}"
                if served
                else f"commit it there, as MOUNTPOINT/{artifact}/drafts/{draft_name}"
            )
            raise InvalidInput(f"a mount of this cache serves {path}: {where}") from None
        if not drafts.exists(artifact, draft_name) and (done := drafts.committed_as(artifact, draft_name)):
            note(f"artfs: {artifact}/drafts/{draft_name} was already committed")
            return done
        d = drafts.open(artifact, draft_name, ctx.store.registry.manifest_by_digest)
        try:
            with progress_bar(None, f"committing {artifact}/drafts/{draft_name}") as bar:
                result = ctx.store.commit_draft(d, **options, progress=bar)
        finally:
            d.close()
        ctx.store.discard_draft(drafts, artifact, draft_name)
    return str(result.version)


def _served_at(artifact, draft_name: str) -> str | None:
    """A draft folder of this name in a running artfs mount of this host, if one shows it."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if len(line.split()) > 2 and line.split()[2] == "fuse.artfs"]
    except OSError:
        return None
    for mountpoint in mounts:
        candidate = os.path.join(mountpoint.replace("\\040", " "), str(artifact), "drafts", draft_name)
        try:
            if _mounted_draft(candidate):
                return candidate
        except ArtfsError:  # a stale mount: another may serve it
            continue
    return None


def register(group: click.Group) -> None:
    group.add_command(draft)
    group.add_command(commit)
