"""Many writers, one artifact: versions stay dense and intact, no update is lost.

Run against the local store and SeaweedFS. Two flavours of racing committers:
`artfs put` subprocesses started together (what users run), and processes
that line up on a barrier right before the version record is written, so
they collide on the very same `vN` every time.
"""

import multiprocessing
import os
import subprocess


from conftest import ARTFS_BIN, read_tree, wait_all, write_tree
from artfs.digest import CHUNK_SIZE

WRITERS = 8
SPAWN = multiprocessing.get_context("spawn")


def _inputs(tmp_path, n=WRITERS):
    """n distinct datasets that share a file (racing dedupe) and each hold a large object."""
    trees = []
    for i in range(n):
        files = {
            "common.txt": "the same in every version\n",
            "who.txt": f"writer {i}\n",
            f"only/{i}.bin": os.urandom(CHUNK_SIZE + 1000 + i),  # a stored object of its own
            **{f"small/{k:02d}.txt": f"writer {i} file {k}\n" * 20 for k in range(10)},
        }
        write_tree(tmp_path / f"in{i}", files)
        trees.append({k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
    return trees


def _check_versions(artfs, tmp_path, trees, artifact):
    """v0..v(n-1) exist, latest is the last, and each holds exactly one writer's content."""
    lines = artfs("ls", artifact).ok().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"v{i}" for i in range(len(trees))], lines
    assert lines[-1].split("\t")[1].split(",")[0] == "latest"
    # Read back in process (a fresh Store, nothing cached): the CLI's get is tested elsewhere.
    from artfs import Store

    store = Store(artfs.store, str(tmp_path / "verify-cache"))
    seen = []
    for i in range(len(trees)):
        out = tmp_path / f"out-{artifact.replace('/', '-')}-v{i}"
        store.download(store.resolve(f"{artifact}:v{i}"), str(out))
        got = read_tree(out)
        matches = [w for w, tree in enumerate(trees) if tree == got]
        assert len(matches) == 1, f"v{i} matches no input exactly"
        seen.append(matches[0])
    assert sorted(seen) == list(range(len(trees))), "every writer's content is one version"
    return seen


def test_racing_cli_puts(artfs, tmp_path):
    trees = _inputs(tmp_path)
    env = {**os.environ, "ARTFS_STORE": artfs.store, "ARTFS_CACHE": artfs.cache}
    procs = [
        subprocess.Popen(
            [ARTFS_BIN, "put", f"in{i}", "--name", "p/race", "--type", "dataset"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WRITERS)
    ]
    results = wait_all(procs)
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err
    printed = sorted(out.strip() for out, _ in results)
    assert printed == sorted(f"p/race:v{i}" for i in range(WRITERS))
    seen = _check_versions(artfs, tmp_path, trees, "p/race")
    # Each writer printed the version that holds its content.
    for i, (out, _) in enumerate(results):
        assert out.strip() == f"p/race:v{seen.index(i)}"


# -- writers that collide on the same version number -------------------------------------


def _commit_at_barrier(url, cache, src, barrier, queue):
    """Child process: publish `src`, but wait for every writer right before the commit."""
    try:
        from artfs import Store
        from artfs.names import ArtifactName
        from artfs.versions.sources import walk_sources
        from artfs.store.registry import Registry

        real_commit = Registry.commit

        def commit(self, *args, **kwargs):
            barrier.wait(timeout=60)
            return real_commit(self, *args, **kwargs)

        Registry.commit = commit
        store = Store(url, cache)
        name = ArtifactName("p", "collide")
        published = store.publish(name, "dataset", walk_sources(src, None))
        queue.put((src, str(published.version)))
    except BaseException as e:  # reported to the parent, which fails the test
        queue.put((src, f"ERROR {type(e).__name__}: {e}"))


def _run_children(target, args_list, timeout=120):
    queue = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, queue)) for args in args_list]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    return results


def test_committers_colliding_on_one_version_number(artfs, tmp_path):
    trees = _inputs(tmp_path)
    barrier = SPAWN.Barrier(WRITERS)
    results = _run_children(
        _commit_at_barrier, [(artfs.store, artfs.cache, str(tmp_path / f"in{i}"), barrier) for i in range(WRITERS)]
    )
    errors = [r for _, r in results if r.startswith("ERROR")]
    assert not errors, errors
    assert sorted(v for _, v in results) == sorted(f"p/collide:v{i}" for i in range(WRITERS))
    _check_versions(artfs, tmp_path, trees, "p/collide")


# -- compare-and-swap on aliases and version records -----------------------------------------

ROUNDS = 15


def _alias_writer(url, cache, who, barrier, queue):
    try:
        from artfs import Store
        from artfs.names import ArtifactName

        store = Store(url, cache)
        name = ArtifactName("p", "a")
        barrier.wait(timeout=60)
        for k in range(ROUNDS):
            store.registry.set_alias(name, f"{who}{k}", k % 2)
            rec = store.resolve(f"p/a:v{k % 2}")
            store.set_info(rec, None, {f"{who}{k}": k}, merge=True)
        queue.put((who, "ok"))
    except BaseException as e:
        queue.put((who, f"ERROR {type(e).__name__}: {e}"))


def _two_versions(artfs, tmp_path):
    """p/a:v0 and p/a:v1 (published in process: the race, not the put, is under test)."""
    from artfs import Store
    from artfs.names import ArtifactName
    from artfs.versions.sources import walk_sources

    store = Store(artfs.store, artfs.cache)
    for content in ("1", "2"):
        write_tree(tmp_path / "d", {"a": content})
        store.publish(ArtifactName("p", "a"), "dataset", walk_sources(str(tmp_path / "d"), None))


def test_racing_alias_and_metadata_changes_lose_nothing(artfs, tmp_path):
    _two_versions(artfs, tmp_path)
    barrier = SPAWN.Barrier(2)
    results = _run_children(_alias_writer, [(artfs.store, artfs.cache, who, barrier) for who in ("x", "y")])
    assert sorted(results) == [("x", "ok"), ("y", "ok")]

    from artfs import Store
    from artfs.names import ArtifactName

    store = Store(artfs.store, artfs.cache)
    expected = {f"{who}{k}": k % 2 for who in "xy" for k in range(ROUNDS)}
    assert store.registry.aliases(ArtifactName("p", "a")) == expected
    for v in (0, 1):
        meta = store.resolve(f"p/a:v{v}").metadata
        assert meta == {f"{who}{k}": k for who in "xy" for k in range(ROUNDS) if k % 2 == v}


def test_racing_moves_of_one_alias_end_on_one_version(artfs, tmp_path):
    _two_versions(artfs, tmp_path)
    env = {**os.environ, "ARTFS_STORE": artfs.store, "ARTFS_CACHE": artfs.cache}
    procs = [
        subprocess.Popen(
            [ARTFS_BIN, "alias", "add", f"p/a:v{v}", "best", "prod"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in (0, 1, 0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    lines = dict(line.split("\t")[:2] for line in artfs("ls", "p/a").ok().out.splitlines())
    # Each alias names exactly one version.
    assert sorted(a for v in lines.values() for a in v.split(",") if a != "-") == ["best", "latest", "prod"]


def test_identical_publishes_racing_make_one_version(artfs, tmp_path):
    """W&B's rule (identical content makes no new version) holds when the publishes race:
    every one of them prints the version the first made."""
    _inputs(tmp_path, 1)
    barrier = SPAWN.Barrier(4)
    results = _run_children(
        _commit_at_barrier, [(artfs.store, artfs.cache, str(tmp_path / "in0"), barrier) for _ in range(4)]
    )
    assert not [r for _, r in results if r.startswith("ERROR")], results
    assert {v for _, v in results} == {"p/collide:v0"}
    lines = artfs("ls", "p/collide").ok().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["v0"]
