"""`artfs wandb import|export`: W&B artifact manifests in and out (see artfs/wandb/manifest.py)."""

from __future__ import annotations

import json
import os

import click

from artfs.cli.format import note, progress_bar
from artfs.errors import InvalidInput, NotFound
from artfs.names import parse_artifact_name, parse_spec
from artfs.store.registry import check_metadata


@click.group(name="wandb")
def wandb_group() -> None:
    """Move artifacts between W&B and artfs (W&B manifests, MD5-checked)."""


@wandb_group.command(name="import")
@click.argument("manifest_file")
@click.option("--files", "files_dir", required=True, help="Folder holding the files, as artifact.download() lays them.")
@click.option("--name", "-n", required=True, help="PROJECT/ARTIFACT")
@click.option("--type", "-t", "type_", required=True, help="dataset, model, …")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias for the new version (repeatable).")
@click.option("--description", "-d")
@click.option("--metadata", "-m", help="JSON object.")
@click.pass_obj
def import_(ctx, manifest_file, files_dir, name, type_, aliases, description, metadata) -> None:
    """Make a version from a W&B manifest (Artifact.manifest.to_manifest_json()) and its files.

    Every file is checked against its MD5 first: one mismatch refuses the import, naming
    every file that differs, and stores nothing. References stay references."""
    from artfs.wandb.manifest import import_manifest

    artifact = parse_artifact_name(name)
    meta = check_metadata(metadata) if metadata is not None else None
    try:
        with open(manifest_file, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"{manifest_file}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {manifest_file}: {e}") from None
    except ValueError as e:
        raise InvalidInput(f"{manifest_file} is not JSON: {e}") from None
    with progress_bar(None, f"importing into {artifact}") as bar:
        rec = import_manifest(ctx.store, doc, files_dir, artifact, type_, list(aliases), description, meta, bar)
    click.echo(str(rec))


@wandb_group.command(name="export")
@click.argument("spec")
@click.option("--output", "-o", default=None, help="File to write (default: standard output).")
@click.pass_obj
def export(ctx, spec, output) -> None:
    """Write the W&B manifest of a version (MD5 digests; W&B's manifest digest matches)."""
    from artfs.wandb.manifest import export_manifest

    rec = ctx.store.resolve(parse_spec(spec))
    text = json.dumps(export_manifest(ctx.store, rec), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = f"{output}.artfs-tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    except OSError as e:
        raise InvalidInput(f"cannot write {output}: {e.strerror or e}") from None
    note(f"{rec} -> {output}")


def register(group: click.Group) -> None:
    group.add_command(wandb_group)
