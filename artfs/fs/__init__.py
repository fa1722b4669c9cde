"""The filesystem: a FUSE-free tree (catalog, tree, content) and a thin pyfuse3 adapter (ops, mount)."""
