"""CLI verbs for references: `artfs ref add DRAFT URI`.

(`artfs put` takes URIs beside local paths; see cli.py. What is pinned and how
credentials are found: artfs/references.py and docs/store-format.md, "References".)
"""

from __future__ import annotations

import os

import click

from artfs.cli.format import note
from artfs.errors import InvalidInput, NotFound
from artfs.names import parse_artifact_name


@click.group()
def ref():
    """References: files that stay in their own bucket or server."""


@ref.command("add")
@click.argument("draft")
@click.argument("uri")
@click.option(
    "--name",
    "-n",
    default=None,
    help="Path in the draft: the file's full path, or the folder for a prefix (default: its basename / the draft's root).",
)
@click.option("--no-checksum", is_flag=True, help="Record only the URI (no pin; size learned when read).")
@click.option(
    "--max-objects",
    type=int,
    default=10_000,
    show_default=True,
    help="Refuse a prefix or folder holding more objects than this.",
)
@click.pass_obj
def ref_add(ctx, draft, uri, name, no_checksum, max_objects):
    """Add URI (s3://, gs://, http(s)://, file://) to a draft as a reference.

    DRAFT is a mounted draft folder (MOUNT/p/a/drafts/D) or p/a/drafts/D. A file already
    at a path is replaced, so adding a URI again re-pins it."""
    from artfs.drafts.store import DraftStore
    from artfs.references.access import resolve

    artifact, draft_name, mount = _draft_of(draft)
    drafts = DraftStore(ctx.store.cache_dir)
    if not drafts.exists(artifact, draft_name):
        if mount:
            raise NotFound(
                f"{draft} is draft {artifact}/drafts/{draft_name} of a mount whose cache is not "
                f"{ctx.store.cache_dir}: run artfs with the mount's --cache"
            )
        raise NotFound(f"no draft {artifact}/drafts/{draft_name} in {ctx.store.cache_dir} (make one with artfs draft)")
    entries = resolve(uri, name, not no_checksum, max_objects)  # before touching the draft: all or nothing
    d = drafts.open(artifact, draft_name, ctx.store.registry.manifest_by_digest)
    try:
        d.add_references([(e.path, e) for e in entries])
    finally:
        d.close()
    for e in entries[:20]:
        click.echo(e.path)
    if len(entries) > 20:
        note(f"… and {len(entries) - 20} more")
    note(f"{len(entries)} reference{'s' if len(entries) != 1 else ''} added to {artifact}/drafts/{draft_name}")


def _draft_of(text: str):
    """(artifact, draft name, whether a mount serves it) for a mounted draft folder or p/a/drafts/D."""
    if os.path.isdir(text):
        try:
            served = os.getxattr(text, "user.artfs.draft").decode()
        except OSError:
            served = None
        if served is not None:
            parts = served.split("/")
            return parse_artifact_name("/".join(parts[:2])), parts[3], True
    parts = text.strip("/").split("/")
    if len(parts) == 4 and parts[2] == "drafts":
        return parse_artifact_name("/".join(parts[:2])), parts[3], False
    raise InvalidInput(f"{text}: not a draft folder in a mount, or PROJECT/ARTIFACT/drafts/NAME")


def register(group: click.Group) -> None:
    group.add_command(ref)
