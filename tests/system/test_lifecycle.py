"""The end of a version's life: `artfs rm`, `artfs prune`, `artfs gc`, and compare-and-swap
on every metadata change.

Versions are set up in process (fast); what is tested runs as the real `artfs` command.
Behaviour that only depends on the registry logic runs on the local store; what depends
on the store's conditional writes and listings (gc, compare-and-swap) runs on both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import artfs as artfs_api
from artfs.errors import ArtfsError
from artfs.names import ArtifactName
from artfs.versions.sources import walk_sources
from conftest import ArtfsCLI, read_tree, write_tree
from mounts import mounter, wait_for  # noqa: F401  (mounter is a fixture)

MiB = 1 << 20
A = ArtifactName("p", "data")


class Versions:
    """Publishes versions of p/data in process and remembers what each one holds."""

    def __init__(self, store_url: str, tmp_path):
        self.url = store_url
        self.store = artfs_api.Store(store_url, str(tmp_path / "setup-cache"))
        self.tmp = tmp_path
        self.files: dict[str, dict[str, bytes]] = {}
        self.cli = ArtfsCLI(store_url, str(tmp_path / "cli-cache"), cwd=str(tmp_path))

    def put(self, files: dict[str, bytes], aliases=(), name: ArtifactName = A) -> str:
        src = write_tree(self.tmp / f"src{len(self.files)}", files)
        latest = self.store.registry.latest(name)
        rec = self.store.publish(
            name, "dataset", walk_sources(src, None), base=latest, same_as=latest, aliases=aliases
        ).version
        self.files[str(rec)] = dict(files)
        return str(rec)

    def versions(self, name: str = "p/data") -> list[tuple[str, str]]:
        """(vN, aliases) as `artfs ls` shows them."""
        return [tuple(line.split("\t")[:2]) for line in self.cli("ls", name).ok().out.splitlines()]

    def check_all(self) -> None:
        """Every live version downloads (verified) with exactly the bytes it was made of."""
        for line in self.cli("ls", "p/data").ok().out.splitlines():
            spec = f"p/data:{line.split()[0]}"
            root = self.tmp / f"check-{spec.replace('/', '-').replace(':', '-')}-{time.monotonic_ns()}"
            self.cli("get", spec, "--root", root).ok()
            assert read_tree(root) == self.files[spec], f"{spec} does not hold what was put"


def sample(tag: str, big: bool = False) -> dict[str, bytes]:
    files = {f"{tag}/{k}.txt": f"{tag} file {k}\n".encode() * 30 for k in range(5)}
    files["shared.txt"] = b"in every version\n"
    if big:
        files[f"{tag}.bin"] = os.urandom(3 * MiB + 5)
    return files


@pytest.fixture
def vs(local_store_url, tmp_path) -> Versions:
    return Versions(local_store_url, tmp_path)


@pytest.fixture
def vs_both(store_url, tmp_path) -> Versions:
    return Versions(store_url, tmp_path)


# -- rm -----------------------------------------------------------------------------------------


def test_rm_refused_while_aliased_unless_force(vs):
    vs.put(sample("a"), aliases=["best"])
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v0").fails("best", "--force")
    vs.cli("rm", "p/data:best").fails("best", "--force")
    assert vs.versions() == [("v0", "best"), ("v1", "latest")]
    assert vs.cli("rm", "p/data:v0", "--force").ok().out == "deleted p/data:v0"
    assert vs.versions() == [("v1", "latest")]
    vs.cli("get", "p/data:best").fails("no alias 'best'")  # the alias went with it
    vs.check_all()


def test_rm_of_latest_moves_latest_back(vs):
    vs.put(sample("a"))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:latest").ok()  # latest is no obstacle
    assert vs.versions() == [("v0", "latest")]
    assert json.loads(vs.cli("info", "p/data:latest").ok().out)["version"] == "v0"


def test_rm_of_the_only_version_needs_force(vs):
    vs.put(sample("a"))
    vs.cli("rm", "p/data:v0").fails("only version", "--force")
    assert vs.versions() == [("v0", "latest")]
    vs.cli("rm", "p/data:v0", "--force").ok()
    assert vs.versions() == []
    vs.cli("get", "p/data").fails("has no versions")


def test_version_numbers_are_never_reused(vs):
    vs.put(sample("a"))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v1").ok()
    write_tree(vs.tmp / "next", sample("c"))
    assert vs.cli("put", "next", "--name", "p/data", "--type", "dataset").ok().out == "p/data:v2"
    vs.cli("rm", "p/data:v2").ok()
    vs.cli("rm", "p/data:v0", "--force").ok()  # every version gone
    assert vs.cli("put", "next", "--name", "p/data", "--type", "dataset").ok().out == "p/data:v3"
    assert vs.versions() == [("v3", "latest")]


def test_rm_of_unknown_or_deleted_versions_fails_clearly(vs):
    vs.put(sample("a"))
    vs.put(sample("b"))
    vs.cli("rm", "p/data").fails("p/data:vN")
    vs.cli("rm", "p/data:v9").fails("v9 does not exist")
    vs.cli("rm", "p/nothing:v0").fails("does not exist")
    vs.cli("rm", "p/data:nope").fails("no alias 'nope'")
    vs.cli("rm", "p/data:v0").ok()
    vs.cli("rm", "p/data:v0").fails("v0 was deleted")
    vs.cli("set", "p/data:v0", "--description", "x").fails("v0 was deleted")
    vs.cli("alias", "add", "p/data:v0", "best").fails("v0 was deleted")
    assert vs.versions() == [("v1", "latest")]
    vs.check_all()


@pytest.mark.mount
def test_deleted_version_leaves_the_mount_while_an_open_file_keeps_reading(vs, local_store_url, mounter):
    vs.put(sample("a"))
    vs.put(sample("b", big=True))
    m = mounter(local_store_url, "--refresh", "0.5")
    big = m.path("p", "data", "v1", "b.bin")
    expected = vs.files["p/data:v1"]["b.bin"]
    with open(big, "rb") as f:
        head = f.read(MiB)
        vs.cli("rm", "p/data:v1").ok()
        t0 = time.monotonic()
        wait_for(lambda: not os.path.exists(m.path("p", "data", "v1")), 10, "v1 to leave the mount")
        assert time.monotonic() - t0 < 5, "gone only well after the refresh interval"
        assert os.readlink(m.path("p", "data", "latest")) == "v0"
        rest = f.read()  # the open file keeps reading, verified, to the end
    assert head + rest == expected
    assert sorted(os.listdir(m.path("p", "data"))) == ["drafts", "latest", "v0"]
    with pytest.raises(FileNotFoundError):
        open(big, "rb")


# -- prune --------------------------------------------------------------------------------------


def test_prune_dry_run_lists_and_deletes_nothing(vs):
    vs.put(sample("a"))
    vs.put(sample("b"), aliases=["best"])
    vs.put(sample("c"))
    vs.put(sample("d"))
    out = vs.cli("prune", "p/data", "--dry-run").ok().out.splitlines()
    assert out == ["would delete p/data:v0", "would delete p/data:v2"]
    assert [v for v, _ in vs.versions()] == ["v0", "v1", "v2", "v3"]


def test_prune_deletes_versions_without_aliases(vs):
    vs.put(sample("a"))
    vs.put(sample("b"), aliases=["best"])
    vs.put(sample("c"))
    vs.put(sample("d"))
    assert vs.cli("prune", "p/data").ok().out.splitlines() == ["deleted p/data:v0", "deleted p/data:v2"]
    assert vs.versions() == [("v1", "best"), ("v3", "latest")]
    r = vs.cli("prune", "p/data").ok()
    assert r.out == "" and "nothing to prune" in r.stderr
    vs.check_all()


def test_prune_keep_spares_the_newest(vs):
    for tag in "abcde":
        vs.put(sample(tag))
    assert vs.cli("prune", "p/data", "--keep", "2").ok().out.splitlines() == [
        "deleted p/data:v0",
        "deleted p/data:v1",
        "deleted p/data:v2",
    ]
    assert vs.versions() == [("v3", "-"), ("v4", "latest")]


def test_prune_bad_input_fails_clearly_and_harms_nothing(vs):
    vs.put(sample("a"))
    vs.put(sample("b"))
    vs.cli("prune", "p/data", "--keep", "-1").fails("--keep")
    vs.cli("prune", "p/nothing").fails("does not exist")
    vs.cli("prune", "not a name").fails()
    assert [v for v, _ in vs.versions()] == ["v0", "v1"]


# -- gc -----------------------------------------------------------------------------------------

GC_LINE = re.compile(r"^(would free|freed) ([\d.]+) (B|KiB|MiB|GiB) in (\d+) objects")


def gc_freed(result) -> tuple[int, int]:
    """(approximate bytes, objects) from `artfs gc`'s report line."""
    m = GC_LINE.match(result.ok().out)
    assert m, f"unexpected gc report\n{result}"
    unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(3)]
    return int(float(m.group(2)) * unit), int(m.group(4))


def test_gc_dry_run_reports_and_deletes_nothing(vs):
    vs.put(sample("a", big=True))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v0").ok()
    size, count = gc_freed(vs.cli("gc", "--dry-run", "--grace", "0s"))
    assert size >= 3 * MiB and count >= 2
    assert vs.cli("gc", "--dry-run", "--grace", "0s").ok().out.startswith("would free")
    assert gc_freed(vs.cli("gc", "--dry-run", "--grace", "0s")) == (size, count)  # nothing was deleted


def test_gc_frees_deleted_versions_and_keeps_live_ones(vs_both):
    vs = vs_both
    vs.put(sample("a", big=True))
    vs.put(sample("b", big=True))
    vs.put(sample("c"), aliases=["best"])
    vs.cli("rm", "p/data:v0").ok()
    size, count = gc_freed(vs.cli("gc", "--grace", "0s"))
    assert 3 * MiB <= size < 4 * MiB and count >= 2  # v0's big file, its manifest and pack
    assert gc_freed(vs.cli("gc", "--grace", "0s")) == (0, 0)  # nothing left to free
    vs.check_all()  # v1 (sharing files with v0) and v2 complete, every byte verified


def test_gc_frees_a_piece_index_with_its_object(vs):
    vs.put(sample("a", big=True))
    vs.put(sample("b", big=True))

    def stored(prefix: str) -> set[str]:
        return {i.key.rsplit("/", 1)[1] for i in vs.store.registry.store.list(prefix)}

    assert len(stored("pieces/")) == 2 and stored("pieces/") == stored("objects/")
    vs.cli("rm", "p/data:v0").ok()
    vs.cli("gc", "--grace", "0s").ok()
    assert len(stored("pieces/")) == 1 and stored("pieces/") == stored("objects/")
    vs.check_all()


def test_gc_grace_keeps_young_garbage(vs):
    vs.put(sample("a", big=True))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v0").ok()
    out = vs.cli("gc").ok().out  # default grace 1h: v0's content is younger
    assert out.startswith("freed 0 B in 0 objects") and "younger than 1h kept" in out
    vs.cli("gc", "--grace", "soon").fails("invalid duration")
    assert gc_freed(vs.cli("gc", "--grace", "0s"))[0] >= 3 * MiB


def test_gc_keeps_pending_distributed_parts(vs):
    vs.put(sample("a"))
    parts = {}
    for i in range(2):
        files = {f"part-{i}/{k}.txt": f"part {i} {k}\n".encode() for k in range(3)}
        files[f"part-{i}.bin"] = os.urandom(MiB + 100 + i)
        write_tree(vs.tmp / f"part{i}", files)
        parts.update(files)
        vs.cli("put", f"part{i}", "--name", "p/data", "--type", "dataset", "--distributed-id", "job-1").ok()
    vs.cli("gc", "--grace", "0s").ok()
    assert vs.cli("finish", "p/data", "--distributed-id", "job-1").ok().out == "p/data:v1"
    vs.files["p/data:v1"] = parts
    vs.check_all()


@pytest.mark.mount
def test_gc_keeps_the_base_of_a_draft_whose_version_was_deleted(vs, local_store_url, mounter):
    vs.put(sample("a"))
    vs.put(sample("b", big=True))  # v1: the draft's base, with content no other version has
    m = mounter(local_store_url)
    draft = m.path("p", "data", "drafts", "wip")
    os.mkdir(draft)  # a draft of latest (v1)
    with open(os.path.join(draft, "new.txt"), "w") as f:
        f.write("added in the draft\n")
    vs.cli("rm", "p/data:v1").ok()
    freed, _ = gc_freed(vs.cli("gc", "--grace", "0s"))
    assert freed < MiB, "gc freed the base content a draft still needs"
    out = vs.cli("commit", draft).ok().out
    assert out == "p/data:v2"
    vs.files["p/data:v2"] = {**vs.files["p/data:v1"], "new.txt": b"added in the draft\n"}
    del vs.files["p/data:v1"]
    vs.check_all()


def test_gc_refuses_while_another_gc_runs_and_breaks_a_stale_lock(vs):
    from artfs.versions.lifecycle import GC_LOCK, _marker

    vs.put(sample("a"))
    lock = os.path.join(vs.url, GC_LOCK)
    vs.store.objects.put(GC_LOCK, _marker())  # another host's gc, running
    vs.cli("gc", "--grace", "0s").fails("another garbage collection is running")
    assert os.path.exists(lock)  # not ours to remove
    old = time.time() - 2 * 3600
    os.utime(lock, (old, old))  # that gc died two hours ago
    vs.cli("gc", "--grace", "0s").ok()
    assert not os.path.exists(lock)
    vs.check_all()


def test_commit_waits_while_gc_holds_its_lock(vs):
    from artfs.versions.lifecycle import GC_LOCK, _marker

    vs.put(sample("a"))
    vs.store.objects.put(GC_LOCK, _marker())
    write_tree(vs.tmp / "next", sample("b"))
    t0 = time.monotonic()
    releaser = threading.Timer(3.0, vs.store.objects.delete, (GC_LOCK,))
    releaser.start()
    try:
        assert vs.cli("put", "next", "--name", "p/data", "--type", "dataset").ok().out == "p/data:v1"
    finally:
        releaser.cancel()
        vs.store.objects.delete(GC_LOCK)
    assert time.monotonic() - t0 >= 3.0, "the commit went ahead while gc held its lock"


def test_gc_waits_for_commits_in_flight_and_ignores_stale_markers(vs):
    """A commit marker (an upload in flight on some host) stops gc from deleting anything;
    a marker left by a process that died long ago does not stop it forever."""
    from artfs.versions.lifecycle import COMMITS, GC_LOCK, _marker, collect

    vs.put(sample("a", big=True))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v0").ok()
    key = f"{COMMITS}crashed-committer.json"
    vs.store.objects.put(key, _marker())
    report = collect(vs.store.registry, grace=0, wait=1.5)
    assert "commits are in flight" in report.aborted and report.deleted == []
    assert not vs.store.objects.exists(GC_LOCK)  # released after giving up
    old = time.time() - 7 * 3600
    os.utime(os.path.join(vs.url, key), (old, old))
    report = collect(vs.store.registry, grace=0, wait=1.5)
    assert not report.aborted and report.bytes_freed >= 3 * MiB
    vs.check_all()


def test_a_long_commit_is_never_taken_for_a_dead_one(vs, monkeypatch):
    """A commit that runs longer than the stale age keeps its marker fresh, so gc keeps waiting."""
    from artfs.versions import lifecycle

    monkeypatch.setattr(lifecycle, "STALE_COMMIT", 1.5)
    monkeypatch.setattr(lifecycle, "HEARTBEAT", 0.3)
    vs.put(sample("a", big=True))
    vs.put(sample("b"))
    vs.cli("rm", "p/data:v0").ok()
    inside = threading.Event()

    def long_commit():
        with lifecycle.commit_guard(vs.store.objects):
            inside.set()
            time.sleep(4)

    t = threading.Thread(target=long_commit)
    t.start()
    try:
        assert inside.wait(10)
        report = lifecycle.collect(vs.store.registry, grace=0, wait=3)
        assert "commits are in flight" in report.aborted and report.deleted == []
    finally:
        t.join()
    assert lifecycle.collect(vs.store.registry, grace=0, wait=3).bytes_freed >= 3 * MiB


def test_gc_refuses_when_a_hold_is_unreadable(vs):
    vs.put(sample("a"))
    vs.store.objects.put("holds/damaged.json", b"{not json")
    vs.cli("gc", "--grace", "0s").fails("holds/damaged.json", "nothing was deleted")
    vs.cli("gc", "--grace", "0s", "--dry-run").fails("holds/damaged.json")
    vs.store.objects.delete("holds/damaged.json")
    vs.cli("gc", "--grace", "0s").ok()
    vs.check_all()


# -- compare-and-swap: concurrent edits never lose an update ---------------------------------------

STREAM = r"""
import io, json, sys, time
from contextlib import redirect_stderr, redirect_stdout
from artfs.cli.main import main
import artfs.store.backends.s3  # imported before the start line, so the streams really overlap
commands, start = json.loads(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
results = []
for c in commands:
    out, err, code = io.StringIO(), io.StringIO(), 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(c)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_streams(cli, streams: list[list[list[str]]], timeout: float = 120) -> list[list[tuple[int, str, str]]]:
    """Runs each stream of `artfs` commands in a process of its own (the command's entry point,
    called once per command), all streams starting at the same moment; returns their results."""
    env = {**os.environ, "ARTFS_STORE": cli.store, "ARTFS_CACHE": cli.cache}
    start = time.time() + 4  # after every process has imported artfs
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STREAM, json.dumps(cmds), str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for cmds in streams
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            results.append([tuple(r) for r in json.loads(out.strip().splitlines()[-1])])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_concurrent_metadata_merges_lose_nothing(vs_both):
    """Two processes each merge 20 keys into one version's metadata at the same time."""
    vs = vs_both
    vs.put(sample("a"))
    streams = [
        [["set", "p/data:v0", "--merge", "--metadata", json.dumps({f"{who}{n}": n})] for n in range(20)] for who in "xy"
    ]
    for stream in run_streams(vs.cli, streams):
        for code, _, err in stream:
            assert code == 0, err
    meta = json.loads(vs.cli("info", "p/data:v0").ok().out)["metadata"]
    assert meta == {f"{who}{n}": n for who in "xy" for n in range(20)}


def test_concurrent_alias_changes_lose_nothing(vs_both):
    vs = vs_both
    vs.put(sample("a"), aliases=["old-x", "old-y"])
    vs.put(sample("b"))
    streams = [
        [["alias", "add", f"p/data:v{n % 2}", f"{who}-{n}"] for n in range(8)]
        + [
            ["alias", "rm", "p/data:v0", f"old-{who}"],
            ["set", "p/data:v1", "--merge", "--metadata", json.dumps({who: True})],
        ]
        for who in "xy"
    ]
    for stream in run_streams(vs.cli, streams):
        for code, _, err in stream:
            assert code == 0, err
    lines = dict(vs.versions())
    assert sorted(lines["v0"].split(",")) == sorted(f"{who}-{n}" for who in "xy" for n in range(0, 8, 2))
    assert sorted(lines["v1"].split(",")) == sorted(["latest", *(f"{who}-{n}" for who in "xy" for n in range(1, 8, 2))])
    assert json.loads(vs.cli("info", "p/data:v1").ok().out)["metadata"] == {"x": True, "y": True}


def test_deletion_racing_edits_is_never_undone(vs):
    vs.put(sample("a"))
    vs.put(sample("b"))
    deleter = [["set", "p/data:v0", "--merge", "--metadata", json.dumps({f"x{n}": n})] for n in range(3)]
    deleter.append(["rm", "p/data:v0"])
    editor = [["set", "p/data:v0", "--merge", "--metadata", json.dumps({f"y{n}": n})] for n in range(8)]
    mine, theirs = run_streams(vs.cli, [deleter, editor])
    for code, _, err in mine:
        assert code == 0, err
    refused = False
    for code, _, err in theirs:  # each edit landed before the delete, or was refused after it
        if refused or code != 0:
            assert code != 0 and "was deleted" in err and "Traceback" not in err, err
            refused = True
    assert vs.versions() == [("v1", "latest")]
    vs.cli("info", "p/data:v0").fails("v0 was deleted")


def test_python_draft_whose_base_is_deleted_and_collected_meanwhile(vs, tmp_path):
    """`use_artifact(…).new_draft()` keeps the base's files; if that base is deleted and its bytes
    collected before the draft is logged, logging must fail clearly or still make a complete version."""
    vs.put(sample("a"))
    vs.put(sample("b", big=True))
    draft = artfs_api.use_artifact("p/data:v1", store=vs.store).new_draft()
    with draft.new_file("new.txt") as f:
        f.write("added\n")
    vs.cli("rm", "p/data:v1").ok()
    vs.cli("gc", "--grace", "0s").ok()
    try:
        logged = artfs_api.log_artifact(draft, store=vs.store)
    except ArtfsError as e:
        assert "p/data:v1 was deleted" in str(e), e
        assert vs.versions() == [("v0", "latest")]  # nothing half-made
        return
    vs.files[f"p/data:{logged.version}"] = {**vs.files.pop("p/data:v1"), "new.txt": b"added\n"}
    vs.check_all()
