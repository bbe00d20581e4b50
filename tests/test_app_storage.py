"""Project storage: schema rules, reference history, durability and concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from refcut.app.masks import encode_rle
from refcut.app.storage import Conflict, NotFound, ProjectStorage


def _mask(shape=(8, 10), box=(1, 4, 2, 6)) -> dict:
    mask = np.zeros(shape, bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    return encode_rle(mask)


@pytest.fixture()
def storage(tmp_path: Path) -> ProjectStorage:
    store = ProjectStorage(tmp_path / "project")
    store.sync_images([("a.jpg", 10, 8, None), ("sub/b.jpg", 10, 8, None), ("bad.jpg", 0, 0, "corrupt")])
    return store


def test_database_uses_wal(storage: ProjectStorage) -> None:
    with sqlite3.connect(storage.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_labels_are_unique_and_soft_deleted(storage: ProjectStorage) -> None:
    hair = storage.create_label("  hair ")
    assert hair.name == "hair"
    with pytest.raises(Conflict):
        storage.create_label("hair")
    with pytest.raises(ValueError):
        storage.create_label("   ")
    storage.add_annotation(1, hair.id, _mask(), [], 12, [2, 1, 4, 3])
    with pytest.raises(Conflict, match="instances"):
        storage.delete_label(hair.id)
    storage.delete_label(hair.id, force=True)
    assert storage.list_labels() == []
    assert storage.list_annotations() == []
    with sqlite3.connect(storage.db_path) as conn:  # nothing is really gone
        assert conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 1
    assert storage.create_label("hair").id != hair.id  # the name is free again


def test_first_accept_becomes_reference_and_undo(storage: ProjectStorage) -> None:
    label = storage.create_label("bag")
    first, reference = storage.add_annotation(1, label.id, _mask(), [{"x": 3, "y": 2, "positive": True}], 12, [2, 1, 4, 3])
    assert reference is not None and reference.source == "first-accept" and reference.annotation_id == first.id
    second, no_reference = storage.add_annotation(2, label.id, _mask(box=(0, 2, 0, 2)), [], 4, [0, 0, 2, 2])
    assert no_reference is None
    promoted = storage.promote(second.id)
    assert storage.current_reference(label.id).id == promoted.id
    assert storage.undo_reference(label.id).id == reference.id  # back to the previous one
    assert storage.undo_reference(label.id) is None
    with pytest.raises(NotFound):
        storage.undo_reference(label.id)


def test_done_follows_instances(storage: ProjectStorage) -> None:
    label = storage.create_label("x")
    annotation, _ = storage.add_annotation(1, label.id, _mask(), [], 12, [2, 1, 4, 3])
    assert storage.progress() == (1, 3)
    storage.delete_annotation(annotation.id)
    assert storage.progress() == (0, 3)
    storage.restore_annotation(annotation.id)
    assert storage.progress() == (1, 3)
    assert storage.images_without_label(label.id) == [2]  # unreadable image 3 is not queued


def test_vanished_images_are_flagged_not_forgotten(storage: ProjectStorage) -> None:
    label = storage.create_label("x")
    storage.add_annotation(2, label.id, _mask(), [], 12, [2, 1, 4, 3])
    storage.sync_images([("a.jpg", 10, 8, None)])
    assert [image.path for image in storage.list_images()] == ["a.jpg"]
    storage.sync_images([("a.jpg", 10, 8, None), ("sub/b.jpg", 10, 8, None)])
    assert storage.list_images()[1].instances == 1


def test_two_connections_writing_concurrently_lose_nothing(tmp_path: Path) -> None:
    ProjectStorage(tmp_path / "p").sync_images([("a.jpg", 10, 8, None)])
    first, second = ProjectStorage(tmp_path / "p"), ProjectStorage(tmp_path / "p")
    label = first.create_label("x")
    errors: list[BaseException] = []

    def writer(store: ProjectStorage, tag: int) -> None:
        try:
            for index in range(25):
                store.add_annotation(1, label.id, _mask(), [{"tag": tag, "i": index}], 12, [2, 1, 4, 3])
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(store, tag)) for tag, store in enumerate((first, second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    tags = [(a.clicks[0]["tag"], a.clicks[0]["i"]) for a in ProjectStorage(tmp_path / "p").list_annotations()]
    assert sorted(tags) == sorted((tag, i) for tag in range(3) for i in range(25))


def test_accepted_work_survives_a_killed_process(tmp_path: Path) -> None:
    """A writer killed with SIGKILL right after add_annotation returned keeps that annotation."""
    project = tmp_path / "p"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import numpy as np
        from refcut.app.masks import encode_rle
        from refcut.app.storage import ProjectStorage
        store = ProjectStorage({str(project)!r})
        store.sync_images([("a.jpg", 10, 8, None)])
        label = store.create_label("x")
        mask = np.zeros((8, 10), bool); mask[2:5, 3:7] = True
        annotation, _ = store.add_annotation(1, label.id, encode_rle(mask), [], 12, [3, 2, 4, 3])
        print(annotation.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == -signal.SIGKILL, result.stderr
    saved_id = int(result.stdout.strip())
    reopened = ProjectStorage(project)
    annotation = reopened.get_annotation(saved_id)
    assert annotation.area == 12 and reopened.progress() == (1, 1)


def test_a_version_1_project_is_migrated_and_a_label_deletion_can_be_undone(tmp_path: Path) -> None:
    """Issue 11 item 4 at the storage level, on a database made before the undo column existed."""
    from refcut.app import storage as storage_module

    project = tmp_path / "p"
    project.mkdir()
    old_schema = storage_module.SCHEMA.replace(",\n    deleted_with_label INTEGER NOT NULL DEFAULT 0", "")
    assert old_schema != storage_module.SCHEMA
    with sqlite3.connect(project / storage_module.DB_NAME) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
    store = ProjectStorage(project)
    assert store.get_meta("schema_version") == str(storage_module.SCHEMA_VERSION)
    store.sync_images([("a.jpg", 10, 8, None), ("b.jpg", 10, 8, None)])
    label = store.create_label("hair")
    kept, _ = store.add_annotation(1, label.id, _mask(), [], 12, [2, 1, 4, 3])
    gone, _ = store.add_annotation(2, label.id, _mask(), [], 12, [2, 1, 4, 3])
    store.delete_annotation(gone.id)
    store.delete_label(label.id, force=True)
    with pytest.raises(Conflict, match="'hair'"):
        store.restore_annotation(kept.id)
    assert store.progress() == (0, 2)
    assert store.restore_label(label.id).instances == 1
    assert [a.id for a in store.list_annotations()] == [kept.id] and store.progress() == (1, 2)
