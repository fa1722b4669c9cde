"""The `artfs` command line. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import errno
import json
import os
import sys
import time

import click

from artfs.cli import format
from artfs.cli.format import counted, human_size, note, progress_bar, progress_shown, when
from artfs.cli.drafts import register as _register_draft_commands
from artfs.cli.lifecycle import register as _register_lifecycle_commands
from artfs.cli.mount import register as _register_mount_commands
from artfs.cli.refs import register as _register_ref_commands
from artfs.cli.stats import register as _register_stats_commands
from artfs.cli.ui import register as _register_ui_commands
from artfs.cli.wandb import register as _register_wandb_commands
from artfs.errors import ArtfsError, InvalidInput, NotFound
from artfs.names import parse_artifact_name, parse_spec, version_name
from artfs.store.registry import check_metadata

EXIT_ERROR = 1
GLOBAL_OPTIONS = ("--store", "--cache", "--debug", "--quiet")  # the group's: before the command
INFO_REFERENCE_URIS = 100  # `artfs info` lists at most this many reference URIs


# Commands that may make a new store where none is (saying so); every other command refuses
# a location that holds no artfs store, naming it, and creates nothing there.
CREATING_COMMANDS = {"put", "commit", "draft", "mount", "finish", "wandb import", "ref add"}


class Context:
    def __init__(self, store_url, cache, debug):
        self.store_url, self.cache, self.debug = store_url, cache, debug
        self._store = None
        self._fresh = False

    def done(self) -> None:
        """After a command that succeeded: say so if it made a new store."""
        if self._fresh and self._store is not None and self._store.registry.is_store():
            format.note(f"artfs: created a new store at {self._store.url}")

    @property
    def store(self):
        if self._store is None:
            from artfs.api.store import Store

            click_ctx = click.get_current_context()
            command = " ".join(click_ctx.command_path.split()[1:])
            creating = command in CREATING_COMMANDS
            store = Store(self.store_url, self.cache, create=creating)
            existed = store.registry.is_store()
            if not creating and not existed:
                raise NotFound(f"no artfs store at {store.url} (check --store or ARTFS_STORE)")
            self._fresh = creating and not existed  # said after the command, if it made it (done())
            self._store = store
        return self._store


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_url", envvar="ARTFS_STORE", help="Store: a path, file://PATH or s3://BUCKET/PREFIX.")
@click.option("--cache", envvar="ARTFS_CACHE", help="Local cache folder.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    envvar="ARTFS_QUIET",
    help="No progress bars and no notes on stderr (results and errors are still printed).",
)
@click.version_option(package_name="artfs")
@click.pass_context
def cli(click_ctx, store_url, cache, debug, quiet):
    """Versioned datasets and models in an object store, as a filesystem."""
    format.QUIET = quiet
    click_ctx.obj = Context(store_url, cache, debug)


@cli.result_callback()
@click.pass_obj
def _after(ctx, *_args, **_kwargs):
    ctx.done()


def _metadata(text: str | None) -> dict | None:
    return None if text is None else check_metadata(text)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--name", "-n", required=True, help="PROJECT/ARTIFACT")
@click.option("--type", "-t", "type_", required=True, help="dataset, model, …")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias for the new version (repeatable).")
@click.option("--description", "-d")
@click.option("--metadata", "-m", help="JSON object.")
@click.option("--no-checksum", is_flag=True, help="For URIs: record only the URI (no pin; size learned when read).")
@click.option(
    "--max-objects",
    type=int,
    default=10_000,
    show_default=True,
    help="For URIs: refuse a prefix or folder holding more objects than this.",
)
@click.option(
    "--distributed-id",
    default=None,
    help="Add these files to a version many writers build together (committed by `artfs finish`).",
)
@pass_ctx
def put(ctx, paths, name, type_, aliases, description, metadata, no_checksum, max_objects, distributed_id):
    """Publish files or folders as the next version of an artifact.

    A URI (s3://, gs://, http(s)://, file://) is added as a reference: its bytes stay
    at the source, pinned (ETag, version, size, blake3), and are never uploaded."""
    from artfs.references.access import default_name, is_uri, resolve
    from artfs.versions.publish import SourceList
    from artfs.versions.sources import TreeWalk, walk_each, walk_sources

    artifact = parse_artifact_name(name)
    meta = _metadata(metadata)
    local = [p for p in paths if not is_uri(p)]
    files: TreeWalk | SourceList
    if len(paths) == 1 and local and os.path.isdir(paths[0]) and distributed_id is None:
        files = TreeWalk(paths[0])  # streamed: a tree of any size in bounded memory
    elif len(paths) == 1 and local and os.path.isdir(paths[0]):
        files = walk_sources(paths[0], None)
    else:
        files = walk_each(local)  # (with their folders: a version keeps empty ones)
    refs = [
        e
        for p in paths
        if is_uri(p)
        for e in resolve(p, None if len(paths) == 1 else default_name(p), not no_checksum, max_objects)
    ]
    if not (files.has_files() if isinstance(files, TreeWalk) else files) and not refs:
        raise InvalidInput(f"nothing to put: no files in {' '.join(paths)}")
    store = ctx.store
    if isinstance(files, TreeWalk):
        total = files.totals()[1] if progress_shown() else 0  # a second walk, for the bar only
    else:
        total = sum(os.path.getsize(f.local) for f in files)
    if distributed_id is not None:
        from artfs.versions.distributed import Distributed

        if aliases or description is not None or metadata is not None:
            raise InvalidInput("--alias, --description and --metadata go with `artfs finish` for a distributed version")
        with progress_bar(total, "hashing and uploading") as bar:
            Distributed(store).upsert(artifact, type_, distributed_id, files, refs, progress=bar)
        click.echo(
            f"{artifact}: {counted(len(files) + len(refs), 'file')} added to distributed version {distributed_id!r}"
        )
        return
    latest = store.registry.latest(artifact)
    with progress_bar(total, "hashing and uploading") as bar:
        result = store.publish(
            artifact,
            type_,
            files,
            refs,
            base=latest,
            same_as=latest,
            description=description,
            metadata=meta,
            aliases=aliases,
            progress=bar,
        )
    click.echo(str(result.version))


@cli.command()
@click.argument("name")
@click.argument("paths", nargs=-1)
@click.option("--distributed-id", required=True, help="The id every writer used with `artfs put`.")
@click.option("--type", "-t", "type_", default=None, help="dataset, model, … (needed if no writer gave it).")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias for the new version (repeatable).")
@click.option("--description", "-d")
@click.option("--metadata", "-m", help="JSON object.")
@click.option("--overwrite", is_flag=True, help="Where writers disagree on a path, keep the last writer's.")
@pass_ctx
def finish(ctx, name, paths, distributed_id, type_, aliases, description, metadata, overwrite):
    """Commit the union of every writer's files as one new version (optionally adding PATHS first)."""
    from artfs.versions.distributed import Distributed
    from artfs.versions.sources import walk_each, walk_sources

    artifact = parse_artifact_name(name)
    meta = _metadata(metadata)
    dist = Distributed(ctx.store)
    if paths:
        files = walk_sources(paths[0], None) if len(paths) == 1 and os.path.isdir(paths[0]) else walk_each(list(paths))
        dist.upsert(artifact, type_, distributed_id, files)
    result = dist.finish(
        artifact,
        distributed_id,
        type_=type_,
        aliases=aliases,
        description=description,
        metadata=meta,
        overwrite=overwrite,
    )
    click.echo(str(result.version))


@cli.command()
@click.argument("spec")
@click.option("--root", "-r", default=None, help="Folder to write into (default: ./artifacts/NAME/VERSION).")
@click.option("--path", "-p", default=None, help="Only this file or folder of the version.")
@pass_ctx
def get(ctx, spec, root, path):
    """Download a version (verified; files already correct are skipped)."""
    rec = ctx.store.resolve(parse_spec(spec))
    root = root or os.path.join("artifacts", rec.artifact.name, rec.name)
    with progress_bar(rec.size, f"get {rec}") as bar:
        stats = ctx.store.download(rec, root, path, progress=bar)
    note(f"{rec} -> {root} ({stats.files_written} written, {stats.files_skipped} already there)")
    click.echo(os.path.abspath(root))


@cli.command(name="ls")
@click.argument("what", required=False)
@pass_ctx
def ls_(ctx, what):
    """List projects, artifacts of a project, versions of an artifact, or files of a version."""
    reg = ctx.store.registry
    if not what:
        for p in reg.projects():
            click.echo(p)
        return
    if "/" not in what:
        from artfs.names import ArtifactName

        artifacts = reg.artifacts(what)
        if not artifacts:
            raise NotFound(f"project {what} does not exist (artfs ls lists the projects)")
        for a in artifacts:
            name = ArtifactName(what, a)
            versions = reg.versions(name)
            click.echo(f"{a}\t{reg.artifact_type(name) or '?'}\t{counted(len(versions), 'version')}")
        return
    spec = parse_spec(what)
    if spec.selector is None:
        versions = reg.versions(spec.artifact)
        if not versions and reg.artifact_type(spec.artifact) is None:
            raise NotFound(f"artifact {spec.artifact} does not exist")
        by_version = reg.aliases_by_version(spec.artifact, versions)
        for r in versions:
            aliases = ",".join(by_version.get(r.number, [])) or "-"
            click.echo(f"{r.name}\t{aliases}\t{human_size(r.size)}\t{counted(r.files, 'file')}\t{when(r.created)}")
        return
    rec = reg.resolve(spec)
    for e in ctx.store.manifest(rec):
        size = "?" if e.size < 0 else str(e.size)
        click.echo(f"{size}\t{e.path}" + (f"\t-> {e.ref['uri']}" if e.ref else ""))


@cli.command()
@click.argument("spec")
@pass_ctx
def info(ctx, spec):
    """A version's type, aliases, digest, size, files, metadata and origin, as JSON."""
    reg = ctx.store.registry
    rec = reg.resolve(parse_spec(spec))
    m = ctx.store.manifest(rec)
    doc = {
        "name": str(rec.artifact),
        "version": rec.name,
        "type": rec.type,
        "aliases": reg.aliases_by_version(rec.artifact).get(rec.number, []),
        "digest": rec.manifest,
        "size": rec.size,
        "files": rec.files,
        "references": m.reference_count,
        "reference_uris": m.reference_uris(INFO_REFERENCE_URIS),  # capped: see "references"
        "description": rec.description,
        "metadata": rec.metadata,
        "creator": rec.creator,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.created)),
        "base": version_name(rec.base) if rec.base is not None else None,
    }
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


@cli.group()
def alias():
    """Add or remove aliases."""


@alias.command("add")
@click.argument("spec")
@click.argument("aliases", nargs=-1, required=True)
@pass_ctx
def alias_add(ctx, spec, aliases):
    """Point ALIAS… at a version (moving them from any other version)."""
    rec = ctx.store.resolve(spec)
    for a in aliases:
        ctx.store.registry.set_alias(rec.artifact, a, rec.number)
    click.echo(str(rec))


@alias.command("rm")
@click.argument("spec")
@click.argument("aliases", nargs=-1, required=True)
@pass_ctx
def alias_rm(ctx, spec, aliases):
    """Remove ALIAS… from a version."""
    parsed = parse_spec(spec)
    rec = ctx.store.resolve(parsed)
    for a in aliases:
        ctx.store.registry.remove_alias(rec.artifact, a, rec.number)
    click.echo(str(rec))


@cli.command(name="set")
@click.argument("spec")
@click.option("--description", "-d")
@click.option("--metadata", "-m", help="JSON object (replaces, or merges with --merge).")
@click.option("--merge", is_flag=True, help="Merge --metadata into the existing metadata.")
@pass_ctx
def set_(ctx, spec, description, metadata, merge):
    """Change a version's description or metadata."""
    if description is None and metadata is None:
        raise InvalidInput("nothing to set: give --description and/or --metadata")
    rec = ctx.store.resolve(spec)
    rec = ctx.store.set_info(rec, description, _metadata(metadata), merge)
    click.echo(str(rec))


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="artfs", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("artfs: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, naming where help is (click prints three)
        where = (
            f"artfs {' '.join(e.ctx.command_path.split()[1:])} --help".replace("  ", " ") if e.ctx else "artfs --help"
        )
        text = e.format_message()
        if isinstance(e, click.NoSuchOption) and e.option_name in GLOBAL_OPTIONS:
            text = f"{e.option_name} goes before the command: artfs {e.option_name} VALUE COMMAND …"
        click.echo(f"artfs: error: {text} (see {where})", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ArtfsError as e:
        if debug:
            raise
        click.echo(f"artfs: error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("artfs: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except OSError as e:
        if debug:
            raise
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            click.echo(f"artfs: internal error: {type(e).__name__}: {e} (rerun with --debug for details)", err=True)
        else:  # a full disk no layer named: still one line the user can act on
            where = f" writing {e.filename}" if e.filename else ""
            click.echo(f"artfs: error: no space left on device{where}", err=True)
        sys.exit(EXIT_ERROR)
    except Exception as e:  # the last line of defence: never a traceback without --debug
        if debug:
            raise
        click.echo(f"artfs: internal error: {type(e).__name__}: {e} (rerun with --debug for details)", err=True)
        sys.exit(EXIT_ERROR)


# Verb groups defined beside their layer, each registering its commands on the group.
_register_mount_commands(cli)
_register_draft_commands(cli)
_register_ref_commands(cli)
_register_lifecycle_commands(cli)
_register_wandb_commands(cli)
_register_ui_commands(cli)
_register_stats_commands(cli)
