"""CLI verbs for a version's upkeep and the end of its life: verify, rm, prune, gc."""

from __future__ import annotations

import click

from artfs.cli.format import human_size, note
from artfs.errors import CorruptRecord, InvalidInput
from artfs.names import parse_artifact_name, parse_spec


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise InvalidInput(f"invalid duration {text!r}: use e.g. 30m, 1h, 2d") from None


@click.command(name="rm")
@click.argument("spec")
@click.option("--force", is_flag=True, help="Delete even if aliases other than latest name it (they go too).")
@click.pass_obj
def rm_(ctx, spec, force):
    """Delete a version. Its number is never reused; its bytes go at the next gc."""
    from artfs.versions.lifecycle import delete_version

    parsed = parse_spec(spec)
    if parsed.selector is None:
        raise InvalidInput(f"say which version to delete: {parsed.artifact}:vN")
    rec = ctx.store.resolve(parsed)
    delete_version(ctx.store.registry, rec, force)
    click.echo(f"deleted {rec}")


@click.command()
@click.argument("name")
@click.option("--keep", default=0, show_default=True, help="Also keep this many newest versions.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.pass_obj
def prune(ctx, name, keep, dry_run):
    """Delete the versions of an artifact that have no alias (latest counts as one)."""
    from artfs.versions.lifecycle import delete_version, prune_plan

    a = parse_artifact_name(name)
    plan = prune_plan(ctx.store.registry, a, keep)
    for rec in plan:
        if not dry_run:
            delete_version(ctx.store.registry, rec)
        click.echo(f"{'would delete' if dry_run else 'deleted'} {rec}")
    if not plan:
        note(f"nothing to prune in {a}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@click.option("--grace", default="1h", show_default=True, help="Never delete anything younger than this.")
@click.pass_obj
def gc(ctx, dry_run, grace):
    """Delete stored content no version, draft or pending upload can still need."""
    from artfs.versions.lifecycle import collect

    report = collect(ctx.store.registry, _duration(grace), dry_run)
    if report.aborted:
        raise InvalidInput(report.aborted)
    verb = "would free" if dry_run else "freed"
    click.echo(
        f"{verb} {human_size(report.bytes_freed)} in {len(report.deleted)} objects "
        f"({report.live_manifests} live manifests; {report.kept_young} unreferenced objects younger than {grace} kept)"
    )


@click.command()
@click.argument("spec")
@click.option("--depth", default=2, show_default=True, help="How many steps up and down the graph.")
@click.option(
    "--dot", "dot_file", default=None, help="Also write the graph as Graphviz dot to this file ('-': stdout)."
)
@click.pass_obj
def lineage(ctx, spec, depth, dot_file):
    """Who logged a version and what that run used; which runs used it and what they logged."""
    from artfs.versions import lineage as graph

    if depth < 1:
        raise InvalidInput("--depth must be 1 or more")
    rec = ctx.store.resolve(parse_spec(spec))
    g = graph.walk(ctx.store.registry, rec, depth)
    start = str(rec)
    if dot_file == "-":
        click.echo(graph.as_dot(g, start))
        return
    click.echo(graph.as_text(g, start))
    if dot_file:
        with open(dot_file, "w") as f:
            f.write(graph.as_dot(g, start) + "\n")


@click.command()
@click.argument("spec")
@click.option("--jobs", default=8, show_default=True, help="Ranged GETs at once.")
@click.pass_obj
def verify(ctx, spec, jobs):
    """Re-check a version's stored bytes against their digests, from the store itself.

    Names every damaged file and exits 1 if any; a later publish of the same bytes
    uploads the damaged objects again."""
    from artfs.cli.format import progress_bar
    from artfs.versions.verify import verify_manifest

    rec = ctx.store.resolve(spec)
    with progress_bar(rec.size, f"verify {rec}") as bar:
        report = verify_manifest(ctx.store.objects, ctx.store.manifest(rec), jobs, bar)
    for d in report.damaged:
        click.echo(f"damaged: {d.path} (object {d.key}): {d.why}")
    refs = (
        f", {report.references} references not checked (their bytes are at their source)" if report.references else ""
    )
    if report.damaged:
        files = len({d.path for d in report.damaged if not d.key.startswith("manifests/")}) + report.unlisted
        raise CorruptRecord(f"{rec}: {files} of {report.files} stored files damaged{refs}")
    click.echo(f"{rec}: {report.files} stored files verified{refs}")


def register(group: click.Group) -> None:
    for command in (verify, rm_, prune, gc, lineage):
        group.add_command(command)
