"""GC is safe under concurrency (docs/semantics.md, store invariant 4), against SeaweedFS.

For RUN_SECONDS, separate processes hammer one store at once:
  gc        `artfs gc --grace 0s` in a loop (the most aggressive setting: only the
            protocol — commit markers, the gc lock, holds, parts — protects anything)
  commit×2  `artfs put` of changing content into p/data, some of it shared with earlier
            (possibly deleted, possibly being collected) versions so dedupe reuses it
  delete    `artfs rm` of old versions of p/data (so there is garbage to collect)
  upsert    `artfs put --distributed-id job-1` parts into p/dist, never finished until the end
  read      `artfs get p/data` (verified download) of whatever is latest
Each worker runs the `artfs` command's own entry point (artfs.cli.main.main) in a loop in
one process, so a short test gets many interleavings, and logs what it did as JSON lines.

Afterwards every remaining version must download (every byte verified) with exactly the
files that were put, every read must have returned exactly what was put (or failed only
because its version was deleted meanwhile), and `artfs finish` must commit every part.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

RUN_SECONDS = 30
MiB = 1 << 20


# -- the workers (run as `python test_gc_concurrency.py ROLE WORKDIR STORE N`) ---------------------


def pool() -> tuple[list[bytes], list[bytes]]:
    """Content every worker draws from, so commits dedupe against each other's (and deleted) bytes."""
    rnd = random.Random(20240601)
    return [rnd.randbytes(rnd.randrange(500, 20000)) for _ in range(6)], [
        rnd.randbytes(MiB + 4096 * k) for k in range(3)
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_digest(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root).replace(os.sep, "/")] = sha(f.read())
    return out


def write_files(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def artfs_main(*args: str) -> tuple[int, str, str]:
    """`artfs ARGS…` through the command's entry point, in this process."""
    from artfs.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue().strip(), err.getvalue().strip()


def worker(role: str, workdir: str, n: int) -> None:
    import shutil

    rnd = random.Random(f"{role}{n}{os.getpid()}")
    small, big = pool()
    stop = os.path.join(workdir, "stop")
    journal = open(os.path.join(workdir, f"{role}{n}.jsonl"), "a", buffering=1)

    def log(**doc):
        journal.write(json.dumps({"t": time.time(), **doc}) + "\n")

    i = 0
    while not os.path.exists(stop):
        i += 1
        if role in ("commit", "upsert"):
            tag = f"{role}{n}-{i}"
            files = {f"{tag}/own-{k}.txt": rnd.randbytes(rnd.randrange(50, 4000)) for k in range(3)}
            files[f"{tag}/pooled.bin" if role == "upsert" else "pooled.bin"] = rnd.choice(small)
            if rnd.random() < 0.5:
                files[f"{tag}/big.bin" if role == "upsert" else "big.bin"] = rnd.choice(big)
            src = os.path.join(workdir, "src", tag)
            write_files(src, files)
            if role == "commit":
                code, out, err = artfs_main("put", src, "--name", "p/data", "--type", "dataset")
            else:
                code, out, err = artfs_main(
                    "put", src, "--name", "p/dist", "--type", "dataset", "--distributed-id", "job-1"
                )
            log(op=role, code=code, out=out, err=err, files={k: sha(v) for k, v in files.items()})
            shutil.rmtree(src)
        elif role == "delete":
            code, out, err = artfs_main("ls", "p/data")
            rows = [line.split("\t") for line in out.splitlines()] if code == 0 else []
            old = [r[0] for r in rows[:-3] if r[1] == "-"]  # keep the newest three
            if old:
                victim = rnd.choice(old)
                code, out, err = artfs_main("rm", f"p/data:{victim}")
                log(op="rm", version=f"p/data:{victim}", code=code, out=out, err=err)
            time.sleep(rnd.uniform(0.1, 0.5))
        elif role == "read":
            root = os.path.join(workdir, "read", str(i))
            code, out, err = artfs_main("info", "p/data:latest")
            if code != 0:
                log(op="info", code=code, err=err)
                continue
            version = "p/data:" + json.loads(out)["version"]
            code, out, err = artfs_main("get", version, "--root", root)
            log(op="get", code=code, version=version, err=err, files=tree_digest(root) if code == 0 else None)
            shutil.rmtree(root, ignore_errors=True)
        elif role == "gc":
            code, out, err = artfs_main("gc", "--grace", "0s")
            log(op="gc", code=code, out=out, err=err)
            time.sleep(rnd.uniform(0.0, 0.4))
    log(op="stopped", iterations=i)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    sys.exit(0)


# -- the test ----------------------------------------------------------------------------------------


def read_journal(workdir, name) -> list[dict]:
    path = os.path.join(workdir, f"{name}.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.s3
def test_gc_in_a_loop_while_others_commit_upsert_delete_and_read(s3_test_bucket, tmp_path):
    from conftest import ARTFS_BIN, ArtfsCLI, fresh_s3_url

    store = fresh_s3_url(s3_test_bucket)
    workdir = str(tmp_path)
    cli = ArtfsCLI(store, str(tmp_path / "verify-cache"), cwd=workdir)
    roles = [("gc", 0), ("commit", 0), ("commit", 1), ("delete", 0), ("upsert", 0), ("read", 0)]
    procs = []
    try:
        # A first version, so readers and deleters have something from the start.
        write_files(str(tmp_path / "first"), {"pooled.bin": pool()[0][0], "big.bin": pool()[1][0]})
        cli("put", "first", "--name", "p/data", "--type", "dataset").ok()
        for role, n in roles:
            env = {
                **os.environ,
                "ARTFS_STORE": store,
                "ARTFS_CACHE": str(tmp_path / f"cache-{role}{n}"),
                "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), role, workdir, str(n)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        time.sleep(RUN_SECONDS)
    finally:
        open(os.path.join(workdir, "stop"), "w").close()
        outputs = []
        for p in procs:
            try:
                outputs.append(p.communicate(timeout=120)[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outputs.append(p.communicate()[0])
    for (role, n), p, output in zip(roles, procs, outputs):
        assert p.returncode == 0, f"worker {role}{n} crashed:\n{output}"

    logs = {f"{role}{n}": read_journal(workdir, f"{role}{n}") for role, n in roles}
    commits = [e for k in ("commit0", "commit1") for e in logs[k] if e["op"] == "commit"]
    upserts = [e for e in logs["upsert0"] if e["op"] == "upsert"]
    gcs = [e for e in logs["gc0"] if e["op"] == "gc"]
    rms = [e for e in logs["delete0"] if e["op"] == "rm"]
    gets = [e for e in logs["read0"] if e["op"] == "get"]

    # Everything was really exercised.
    failed = [e for e in commits + upserts if e["code"] != 0]
    assert not failed, f"commits or upserts failed: {failed[:3]}"
    assert len(commits) >= 6 and len(upserts) >= 3, (len(commits), len(upserts))
    assert sum(1 for e in rms if e["code"] == 0) >= 2, rms
    assert len([e for e in gcs if e["code"] == 0]) >= 3, gcs
    bad_gc = [e for e in gcs if e["code"] != 0 and "commits are in flight" not in e["err"]]
    assert not bad_gc, bad_gc
    bad_rm = [e for e in rms if e["code"] != 0 and "was deleted" not in e["err"] and "has aliases" not in e["err"]]
    assert not bad_rm, bad_rm

    # What each commit put, by version.
    put = {"p/data:v0": {"pooled.bin": sha(pool()[0][0]), "big.bin": sha(pool()[1][0])}}
    for e in commits:
        assert e["out"] not in put, f"two commits printed {e['out']}"
        put[e["out"]] = e["files"]

    # Every read returned exactly what was put, or failed only because its version went.
    deleted = {e["version"] for e in rms if e["code"] == 0}
    for e in gets:
        if e["code"] == 0:
            assert e["files"] == put[e["version"]], f"get of {e['version']} returned other bytes"
        else:  # gc may collect a deleted version's bytes under a reader: that reader fails cleanly
            assert e["version"] in deleted, f"read of a live version failed: {e}"
    infos = [e for e in logs["read0"] if e["op"] == "info"]
    assert not infos, f"artfs info p/data:latest failed: {infos[:3]}"

    # One more collection with everything quiet, then every remaining version, byte for byte.
    final = cli("gc", "--grace", "0s").ok().out
    freed = [e for e in gcs if e["code"] == 0 and not e["out"].startswith("freed 0 B")]
    assert freed or not final.startswith("freed 0 B"), "gc never freed anything: collection was not exercised"
    remaining = [line.split("\t")[0] for line in cli("ls", "p/data").ok().out.splitlines()]
    assert {f"p/data:{v}" for v in remaining} == set(put) - deleted
    checks = [
        subprocess.Popen(
            [ARTFS_BIN, "get", f"p/data:{v}", "--root", str(tmp_path / "verify" / v)],
            env={**os.environ, "ARTFS_STORE": store, "ARTFS_CACHE": str(tmp_path / f"vc-{v}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in remaining
    ]
    for v, p in zip(remaining, checks):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"artfs get p/data:{v} failed after gc: {err}"
        assert tree_digest(str(tmp_path / "verify" / v)) == put[f"p/data:{v}"], f"p/data:{v} changed"

    # The distributed version, pending all along, commits every part.
    assert cli("finish", "p/dist", "--distributed-id", "job-1").ok().out == "p/dist:v0"
    cli("get", "p/dist:v0", "--root", "dist").ok()
    union = {k: v for e in upserts for k, v in e["files"].items()}
    assert tree_digest(str(tmp_path / "dist")) == union
