"""The package's layers (issue 17): store/ owns the units' files and imports nothing above it
(mirror/, fs/, admin/, the command line). Replication reaches the store through
store/replication.py, which mirror/hooks.py fills in."""
import ast
import os

import wormfs

PKG = os.path.dirname(wormfs.__file__)
ABOVE = ("mirror", "fs", "admin", "cli")



def upward_imports(layer):
    found = set()
    base = os.path.join(PKG, layer)
    for name in sorted(os.listdir(base)):
        if not name.endswith(".py"):
            continue
        rel = f"{layer}/{name}"
        tree = ast.parse(open(os.path.join(base, name)).read(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level >= 2 or (node.level == 0 and node.module and
                                       node.module.startswith("wormfs.")):
                    mod = node.module or ""
                    if node.level == 0:
                        mod = mod[len("wormfs."):]
                    names = [mod] if mod else [a.name for a in node.names]
                    for m in names:
                        if m.split(".")[0] in ABOVE:
                            found.add((rel, m))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    parts = a.name.split(".")
                    if parts[0] == "wormfs" and len(parts) > 1 and parts[1] in ABOVE:
                        found.add((rel, ".".join(parts[1:])))
    return found


def test_store_imports_nothing_above_it():
    found = upward_imports("store")
    assert found == set(), f"store/ imports from above it: {sorted(found)}"


def test_a_unit_with_a_duplicate_is_never_opened_without_replication(tmp_path, monkeypatch):
    # Were the hooks missing (a process that imported store/ some other way), a primary
    # with a mirror must be refused, not opened alone and silently left without its
    # duplicate.
    import pytest
    from tests.conftest import clear_immutable, make_pair
    from wormfs.errors import StoreError
    from wormfs.store import replication
    from wormfs.store.store import Store
    p, m = make_pair(str(tmp_path / "p"), str(tmp_path / "m"))
    try:
        monkeypatch.setattr(replication, "_hooks", None)
        with pytest.raises(StoreError, match="replication"):
            Store(p)
        monkeypatch.undo()
        with Store(p) as st:
            assert st.mirror is not None and st.mirror_state()[0] == "synced"
    finally:
        clear_immutable(str(tmp_path))
