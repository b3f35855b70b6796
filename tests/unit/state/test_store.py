"""The store's file: private to its owner, whenever it was made."""

from __future__ import annotations

import stat
from pathlib import Path

from consumer.state.obligations import Obligations
from consumer.state.store import StateStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    Obligations(store)
    store.close()
    assert _mode(tmp_path / "state.db") == 0o600


def test_a_store_made_with_a_wider_mode_is_tightened_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = StateStore(path)
    Obligations(store)
    store.close()
    for file in tmp_path.iterdir():
        file.chmod(0o644)  # a store of an earlier version, or restored from a backup
    StateStore(path).close()
    assert {f.name: _mode(f) for f in tmp_path.iterdir()} == {
        f.name: 0o600 for f in tmp_path.iterdir()
    }
