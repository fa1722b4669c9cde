"""What `resolve` says when a version spec names nothing: the message names what was asked for."""

import pytest

from artfs.errors import NotFound
from artfs.names import ArtifactName, ArtifactSpec
from artfs.store.backends.local import LocalStore
from artfs.store.manifest import Entry, Manifest
from artfs.store.registry import Registry


@pytest.fixture
def registry(tmp_path):
    r = Registry(LocalStore(str(tmp_path)))
    m = Manifest.from_entries([Entry("f", 1, bytes(32), pack=bytes(32))])
    r.commit(ArtifactName("p", "a"), "dataset", m, m.encode())
    return r


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("v7", "p/a:v7 does not exist"),
        ("v12345678901", "p/a has no version 'v12345678901'"),
        ("v01", "p/a has no version 'v01'"),
        ("best", "p/a has no alias 'best'"),
    ],
)
def test_a_selector_that_names_nothing_says_what_it_looked_for(registry, selector, message):
    with pytest.raises(NotFound) as e:
        registry.resolve(ArtifactSpec(ArtifactName("p", "a"), selector))
    assert str(e.value) == message
