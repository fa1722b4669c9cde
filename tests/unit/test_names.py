"""Names of projects, artifacts and aliases, version specs, and manifest paths."""

import pytest

from artfs.errors import InvalidInput
from artfs.names import (
    ArtifactName,
    check_alias,
    check_name,
    join_path,
    normalize_path,
    parse_artifact_name,
    parse_spec,
    parse_version,
    version_name,
)


@pytest.mark.parametrize("name", ["demo", "bike-dataset", "a", "A_1", "x.y", "v1.2", "0", "_x", "a" * 128])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "a..b", "a/b", "/a", "a\x00b", "-a", "a b", "a" * 129, "é", "a:b", "a\n", None, 3],
)
def test_bad_names(name):
    with pytest.raises(InvalidInput):
        check_name(name)


@pytest.mark.parametrize("alias", ["best", "prod", "v", "v1a", "version1", "latest-good", "V1"])
def test_good_aliases(alias):
    assert check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["v0", "v3", "v12", "drafts", "..", ".x", "a/b", ""])
def test_reserved_and_bad_aliases(alias):
    with pytest.raises(InvalidInput):
        check_alias(alias)


def test_versions():
    assert parse_version("v0") == 0
    assert parse_version("v12") == 12
    assert version_name(7) == "v7"
    for text in ("v", "v01", "v-1", "12", "V1", "v1 ", "latest"):
        assert parse_version(text) is None


def test_parse_spec():
    s = parse_spec("demo/bikes:v3")
    assert s.artifact == ArtifactName("demo", "bikes") and s.selector == "v3"
    assert str(s) == "demo/bikes:v3"
    assert parse_spec("demo/bikes").selector is None
    assert parse_spec("demo/bikes:latest").selector == "latest"
    assert parse_spec("demo/bikes:best").selector == "best"
    assert parse_spec("bikes", default_project="demo").artifact == ArtifactName("demo", "bikes")
    assert parse_artifact_name("demo/bikes") == ArtifactName("demo", "bikes")


@pytest.mark.parametrize(
    "text",
    [
        "demo",
        "demo/bikes/extra",
        "../bikes",
        "demo/..",
        "demo/.x",
        "/bikes",
        "demo/bikes:drafts",
        "demo/bikes:a/b",
        "demo/bikes:.x",
        "demo/bikes:",
    ],
)
def test_bad_specs(text):
    with pytest.raises(InvalidInput):
        parse_spec(text)


@pytest.mark.parametrize(
    "path,normal",
    [
        ("a", "a"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("a//b", "a/b"),
        ("./a/./b", "a/b"),
        ("a/b/", "a/b"),
        ("with space/é.png", "with space/é.png"),
    ],
)
def test_normalize_path(path, normal):
    assert normalize_path(path) == normal


@pytest.mark.parametrize(
    "path", ["", ".", "/", "/etc/passwd", "..", "../x", "a/../b", "a/..", "a\x00b", "x" * 256, "/a/b"]
)
def test_bad_paths(path):
    with pytest.raises(InvalidInput):
        normalize_path(path)


def test_join_path():
    assert join_path(None, "a/b") == "a/b"
    assert join_path("images", "cat.png") == "images/cat.png"
    with pytest.raises(InvalidInput):
        join_path("images", "../../etc/passwd")
