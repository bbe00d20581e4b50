"""Project storage: one SQLite database (WAL, synchronous=FULL) per project directory.

Every public write runs in its own ``BEGIN IMMEDIATE`` transaction on its own connection and is
committed before the method returns, so two browser tabs (two request threads) never lose each
other's writes and a killed server keeps everything a response has already confirmed. Nothing is
hard-deleted: annotations and labels carry a ``deleted`` flag, references keep their history.
"""

from __future__ import annotations

import json
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DB_NAME = "project.sqlite"
SCHEMA_VERSION = 2  # 2: annotations.deleted_with_label (undo of a label deletion)
DEFAULT_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                   "#fabed4", "#469990")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    missing INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    colour TEXT NOT NULL,
    sort_order INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS labels_live_name ON labels(name) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS label_references (
    id INTEGER PRIMARY KEY,
    label_id INTEGER NOT NULL REFERENCES labels(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    positive_rle TEXT NOT NULL,
    negative_rle TEXT,
    source TEXT NOT NULL,
    annotation_id INTEGER REFERENCES annotations(id),
    created_at REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS references_by_label ON label_references(label_id, undone, id);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    label_id INTEGER NOT NULL REFERENCES labels(id),
    rle TEXT NOT NULL,
    clicks TEXT NOT NULL,
    area INTEGER NOT NULL,
    bbox TEXT NOT NULL,
    score REAL,
    created_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_at REAL,
    deleted_with_label INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS annotations_by_image ON annotations(image_id, deleted);
"""


class NotFound(LookupError):
    """A row the caller asked for does not exist (or is deleted)."""


class Conflict(ValueError):
    """The write would break a rule (duplicate label name, deleting a label in use, ...)."""


@dataclass
class ImageRow:
    id: int
    path: str
    width: int
    height: int
    done: bool
    missing: bool
    error: str | None
    instances: int = 0


@dataclass
class LabelRow:
    id: int
    name: str
    colour: str
    order: int
    has_reference: bool = False
    reference_id: int | None = None
    instances: int = 0
    deleted: bool = False


@dataclass
class ReferenceRow:
    id: int
    label_id: int
    image_id: int
    positive_rle: dict
    negative_rle: dict | None
    source: str
    annotation_id: int | None
    created_at: float


@dataclass
class AnnotationRow:
    id: int
    image_id: int
    label_id: int
    rle: dict
    clicks: list = field(default_factory=list)
    area: int = 0
    bbox: list = field(default_factory=list)
    score: float | None = None
    created_at: float = 0.0


class ProjectStorage:
    """All reads and writes of one project's database."""

    def __init__(self, project_dir: Path):
        self.project_dir = Path(project_dir)
        self.project_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.project_dir / DB_NAME
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(annotations)")}
            if "deleted_with_label" not in columns:  # a version-1 project
                conn.execute("ALTER TABLE annotations ADD COLUMN deleted_with_label INTEGER NOT NULL DEFAULT 0")
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed (and fsynced) before the block's caller continues."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))

    # -- images ------------------------------------------------------------------------------
    def sync_images(self, entries: list[tuple[str, int, int, str | None]]) -> None:
        """Make the image table match the folder: ``entries`` are (relative path, width, height, error).

        New files are added, vanished files are flagged ``missing`` (their annotations are kept).
        """
        present = {path for path, *_ in entries}
        with self._write() as conn:
            known = {row["path"]: row for row in conn.execute("SELECT path, width, height, error FROM images")}
            for path, width, height, error in entries:
                if path not in known:
                    conn.execute("INSERT INTO images(path, width, height, error) VALUES (?, ?, ?, ?)",
                                 (path, width, height, error))
                else:
                    conn.execute("UPDATE images SET missing = 0, width = ?, height = ?, error = ? WHERE path = ?",
                                 (width, height, error, path))
            for path in known.keys() - present:
                conn.execute("UPDATE images SET missing = 1 WHERE path = ?", (path,))

    def known_image_paths(self) -> dict[str, tuple[int, int, str | None]]:
        with self._connect() as conn:
            return {row["path"]: (row["width"], row["height"], row["error"])
                    for row in conn.execute("SELECT path, width, height, error FROM images")}

    def list_images(self, include_missing: bool = False) -> list[ImageRow]:
        query = """SELECT i.*, (SELECT COUNT(*) FROM annotations a WHERE a.image_id = i.id AND a.deleted = 0) AS n
                   FROM images i {} ORDER BY i.path"""
        with self._connect() as conn:
            rows = conn.execute(query.format("" if include_missing else "WHERE i.missing = 0")).fetchall()
        return [self._image(row, row["n"]) for row in rows]

    def get_image(self, image_id: int) -> ImageRow:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"image {image_id} does not exist")
        return self._image(row, 0)

    def set_done(self, image_id: int, done: bool) -> None:
        """Mark an image done (or not); an image that is missing or cannot be read cannot be marked done."""
        with self._write() as conn:
            row = conn.execute("SELECT path, missing, error FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None:
                raise NotFound(f"image {image_id} does not exist")
            if done and (row["missing"] or row["error"]):
                why = "is no longer in the image folder" if row["missing"] else f"cannot be read ({row['error']})"
                raise Conflict(f"image {row['path']} {why}, so it cannot be marked done")
            conn.execute("UPDATE images SET done = ? WHERE id = ?", (int(done), image_id))

    def progress(self) -> tuple[int, int]:
        """(images done, images total) over images present in the folder."""
        with self._connect() as conn:
            row = conn.execute("SELECT COALESCE(SUM(done), 0) AS done, COUNT(*) AS total FROM images WHERE missing = 0").fetchone()
        return int(row["done"]), int(row["total"])

    @staticmethod
    def _image(row: sqlite3.Row, instances: int) -> ImageRow:
        return ImageRow(id=row["id"], path=row["path"], width=row["width"], height=row["height"], done=bool(row["done"]),
                        missing=bool(row["missing"]), error=row["error"], instances=int(instances))

    # -- labels ------------------------------------------------------------------------------
    def list_labels(self, include_deleted: bool = False) -> list[LabelRow]:
        """Live labels in display order (and the deleted ones too with ``include_deleted``)."""
        query = """SELECT l.*,
                     (SELECT r.id FROM label_references r WHERE r.label_id = l.id AND r.undone = 0
                      ORDER BY r.id DESC LIMIT 1) AS ref_id,
                     (SELECT COUNT(*) FROM annotations a WHERE a.label_id = l.id AND a.deleted = 0) AS n
                   FROM labels l {} ORDER BY l.sort_order, l.id"""
        with self._connect() as conn:
            rows = conn.execute(query.format("" if include_deleted else "WHERE l.deleted = 0")).fetchall()
        return [LabelRow(id=r["id"], name=r["name"], colour=r["colour"], order=r["sort_order"],
                         has_reference=r["ref_id"] is not None, reference_id=r["ref_id"], instances=r["n"],
                         deleted=bool(r["deleted"])) for r in rows]

    def get_label(self, label_id: int) -> LabelRow:
        for label in self.list_labels():
            if label.id == label_id:
                return label
        raise NotFound(f"label {label_id} does not exist")

    def create_label(self, name: str, colour: str | None = None) -> LabelRow:
        name = clean_label_name(name)
        with self._write() as conn:
            self._require_free_name(conn, name)
            count = conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
            order = conn.execute("SELECT COALESCE(MAX(sort_order), -1) + 1 FROM labels WHERE deleted = 0").fetchone()[0]
            colour = colour or DEFAULT_COLOURS[count % len(DEFAULT_COLOURS)]
            cursor = conn.execute("INSERT INTO labels(name, colour, sort_order, created_at) VALUES (?, ?, ?, ?)",
                                  (name, colour, order, time.time()))
            label_id = cursor.lastrowid
        return self.get_label(label_id)

    def update_label(self, label_id: int, name: str | None = None, colour: str | None = None,
                     order: int | None = None) -> LabelRow:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM labels WHERE id = ? AND deleted = 0", (label_id,)).fetchone() is None:
                raise NotFound(f"label {label_id} does not exist")
            if name is not None:
                name = clean_label_name(name)
                self._require_free_name(conn, name, label_id)
                conn.execute("UPDATE labels SET name = ? WHERE id = ?", (name, label_id))
            if colour is not None:
                conn.execute("UPDATE labels SET colour = ? WHERE id = ?", (colour, label_id))
            if order is not None:
                conn.execute("UPDATE labels SET sort_order = ? WHERE id = ?", (order, label_id))
        return self.get_label(label_id)

    def delete_label(self, label_id: int, force: bool = False) -> None:
        """Soft-delete a label; refuses while it has instances unless ``force`` (they are soft-deleted with it).

        Undo with :meth:`restore_label`, which brings back the label and exactly the instances deleted with it.
        """
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM labels WHERE id = ? AND deleted = 0", (label_id,)).fetchone() is None:
                raise NotFound(f"label {label_id} does not exist")
            images = [row["image_id"] for row in conn.execute(
                "SELECT DISTINCT image_id FROM annotations WHERE label_id = ? AND deleted = 0", (label_id,))]
            if images and not force:
                used = conn.execute("SELECT COUNT(*) FROM annotations WHERE label_id = ? AND deleted = 0",
                                    (label_id,)).fetchone()[0]
                raise Conflict(f"label {label_id} has {used} instances; delete them first or pass force")
            conn.execute("""UPDATE annotations SET deleted = 1, deleted_at = ?, deleted_with_label = 1
                            WHERE label_id = ? AND deleted = 0""", (time.time(), label_id))
            conn.execute("UPDATE labels SET deleted = 1 WHERE id = ?", (label_id,))
            for image_id in images:
                self._refresh_done(conn, image_id)

    def restore_label(self, label_id: int) -> LabelRow:
        """Undo :meth:`delete_label`: the label and the instances deleted with it are live again.

        Refused (Conflict) while a live label has the same name (up to case and invisible characters).
        """
        with self._write() as conn:
            row = conn.execute("SELECT name, deleted FROM labels WHERE id = ?", (label_id,)).fetchone()
            if row is None:
                raise NotFound(f"label {label_id} does not exist")
            if not row["deleted"]:
                raise Conflict(f"label {row['name']!r} is not deleted")
            self._require_free_name(conn, row["name"], label_id)
            images = [r["image_id"] for r in conn.execute(
                "SELECT DISTINCT image_id FROM annotations WHERE label_id = ? AND deleted = 1 AND deleted_with_label = 1",
                (label_id,))]
            conn.execute("""UPDATE annotations SET deleted = 0, deleted_at = NULL, deleted_with_label = 0
                            WHERE label_id = ? AND deleted = 1 AND deleted_with_label = 1""", (label_id,))
            conn.execute("UPDATE labels SET deleted = 0 WHERE id = ?", (label_id,))
            conn.executemany("UPDATE images SET done = 1 WHERE id = ?", [(image_id,) for image_id in images])
        return self.get_label(label_id)

    @staticmethod
    def _require_free_name(conn: sqlite3.Connection, name: str, label_id: int | None = None) -> None:
        """Conflict if a live label (other than ``label_id``) has ``name`` up to case and invisible characters."""
        key = label_key(name)
        for row in conn.execute("SELECT id, name FROM labels WHERE deleted = 0"):
            if row["id"] != label_id and label_key(row["name"]) == key:
                same = "named" if row["name"] == name else f"that differs from {name!r} only in case or invisible characters,"
                raise Conflict(f"a label {same} {row['name']!r} already exists")

    # -- references --------------------------------------------------------------------------
    def current_reference(self, label_id: int) -> ReferenceRow | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM label_references WHERE label_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                               (label_id,)).fetchone()
        return self._reference(row) if row else None

    def reference_history(self, label_id: int) -> list[ReferenceRow]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM label_references WHERE label_id = ? AND undone = 0 ORDER BY id DESC",
                                (label_id,)).fetchall()
        return [self._reference(row) for row in rows]

    def set_reference(self, label_id: int, image_id: int, positive_rle: dict, negative_rle: dict | None = None,
                      source: str = "manual", annotation_id: int | None = None) -> ReferenceRow:
        with self._write() as conn:
            self._require_label(conn, label_id)
            self._require_image(conn, image_id)
            reference_id = self._insert_reference(conn, label_id, image_id, positive_rle, negative_rle, source, annotation_id)
        return self._get_reference(reference_id)

    def undo_reference(self, label_id: int) -> ReferenceRow | None:
        """Drop the label's current reference; the previous one (if any) becomes current again."""
        with self._write() as conn:
            self._require_label(conn, label_id)
            row = conn.execute("SELECT id FROM label_references WHERE label_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                               (label_id,)).fetchone()
            if row is None:
                raise NotFound(f"label {label_id} has no reference to undo")
            conn.execute("UPDATE label_references SET undone = 1 WHERE id = ?", (row["id"],))
        return self.current_reference(label_id)

    def promote(self, annotation_id: int) -> ReferenceRow:
        """Make an accepted annotation its label's reference."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM annotations WHERE id = ? AND deleted = 0", (annotation_id,)).fetchone()
            if row is None:
                raise NotFound(f"annotation {annotation_id} does not exist")
            self._require_label(conn, row["label_id"])
            reference_id = self._insert_reference(conn, row["label_id"], row["image_id"], json.loads(row["rle"]), None,
                                                  "promoted", annotation_id)
        return self._get_reference(reference_id)

    def _get_reference(self, reference_id: int) -> ReferenceRow:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM label_references WHERE id = ?", (reference_id,)).fetchone()
        if row is None:
            raise NotFound(f"reference {reference_id} does not exist")
        return self._reference(row)

    @staticmethod
    def _insert_reference(conn: sqlite3.Connection, label_id: int, image_id: int, positive_rle: dict,
                          negative_rle: dict | None, source: str, annotation_id: int | None) -> int:
        cursor = conn.execute(
            """INSERT INTO label_references(label_id, image_id, positive_rle, negative_rle, source, annotation_id, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (label_id, image_id, json.dumps(positive_rle), json.dumps(negative_rle) if negative_rle else None, source,
             annotation_id, time.time()))
        return int(cursor.lastrowid)

    @staticmethod
    def _reference(row: sqlite3.Row) -> ReferenceRow:
        return ReferenceRow(id=row["id"], label_id=row["label_id"], image_id=row["image_id"],
                            positive_rle=json.loads(row["positive_rle"]),
                            negative_rle=json.loads(row["negative_rle"]) if row["negative_rle"] else None,
                            source=row["source"], annotation_id=row["annotation_id"], created_at=row["created_at"])

    # -- annotations -------------------------------------------------------------------------
    def add_annotation(self, image_id: int, label_id: int, rle: dict, clicks: list, area: int, bbox: list,
                       score: float | None = None, reference_if_missing: bool = True) -> tuple[AnnotationRow, ReferenceRow | None]:
        """Store an accepted instance and mark the image done, in one committed transaction.

        If the label has no reference yet and ``reference_if_missing``, the instance also becomes
        the label's reference (returned as the second value; undo with :meth:`undo_reference`).
        """
        now = time.time()
        with self._write() as conn:
            self._require_label(conn, label_id)
            self._require_image(conn, image_id)
            cursor = conn.execute(
                """INSERT INTO annotations(image_id, label_id, rle, clicks, area, bbox, score, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (image_id, label_id, json.dumps(rle), json.dumps(clicks), int(area), json.dumps(bbox), score, now))
            annotation_id = int(cursor.lastrowid)
            conn.execute("UPDATE images SET done = 1 WHERE id = ?", (image_id,))
            reference_id = None
            if reference_if_missing:
                has_ref = conn.execute("SELECT 1 FROM label_references WHERE label_id = ? AND undone = 0",
                                       (label_id,)).fetchone()
                if not has_ref:
                    reference_id = self._insert_reference(conn, label_id, image_id, rle, None, "first-accept", annotation_id)
        reference = self._get_reference(reference_id) if reference_id is not None else None
        return self.get_annotation(annotation_id), reference

    def get_annotation(self, annotation_id: int) -> AnnotationRow:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM annotations WHERE id = ? AND deleted = 0", (annotation_id,)).fetchone()
        if row is None:
            raise NotFound(f"annotation {annotation_id} does not exist")
        return self._annotation(row)

    def list_annotations(self, image_id: int | None = None, include_deleted_labels: bool = False) -> list[AnnotationRow]:
        """Live instances of one image (or of the whole project), oldest first.

        Instances whose label is deleted are skipped, unless ``include_deleted_labels`` (the export
        uses it to name any such instance in its warnings instead of dropping it silently).
        """
        query = """SELECT a.* FROM annotations a JOIN labels l ON l.id = a.label_id
                   WHERE a.deleted = 0 {} {} ORDER BY a.image_id, a.id"""
        labels = "" if include_deleted_labels else "AND l.deleted = 0"
        with self._connect() as conn:
            if image_id is None:
                rows = conn.execute(query.format(labels, "")).fetchall()
            else:
                rows = conn.execute(query.format(labels, "AND a.image_id = ?"), (image_id,)).fetchall()
        return [self._annotation(row) for row in rows]

    def delete_annotation(self, annotation_id: int) -> None:
        """Soft-delete; the image stops being done when its last instance goes."""
        with self._write() as conn:
            row = conn.execute("SELECT image_id FROM annotations WHERE id = ? AND deleted = 0", (annotation_id,)).fetchone()
            if row is None:
                raise NotFound(f"annotation {annotation_id} does not exist")
            conn.execute("UPDATE annotations SET deleted = 1, deleted_at = ? WHERE id = ?", (time.time(), annotation_id))
            self._refresh_done(conn, row["image_id"])

    def restore_annotation(self, annotation_id: int) -> AnnotationRow:
        """Undo a deletion; refused (Conflict, naming the label) while the instance's label is deleted."""
        with self._write() as conn:
            row = conn.execute("""SELECT a.image_id, a.label_id, l.name AS label_name, l.deleted AS label_deleted
                                  FROM annotations a JOIN labels l ON l.id = a.label_id
                                  WHERE a.id = ? AND a.deleted = 1""", (annotation_id,)).fetchone()
            if row is None:
                raise NotFound(f"annotation {annotation_id} is not a deleted annotation")
            if row["label_deleted"]:
                raise Conflict(f"annotation {annotation_id} belongs to the deleted label {row['label_name']!r}: "
                               f"restore the label (with its instances) first")
            conn.execute("UPDATE annotations SET deleted = 0, deleted_at = NULL WHERE id = ?", (annotation_id,))
            conn.execute("UPDATE images SET done = 1 WHERE id = ?", (row["image_id"],))
        return self.get_annotation(annotation_id)

    def images_without_label(self, label_id: int) -> list[int]:
        """Ids of readable images with no live instance of ``label_id`` (the review queue)."""
        with self._connect() as conn:
            rows = conn.execute(
                """SELECT i.id FROM images i WHERE i.missing = 0 AND i.error IS NULL AND NOT EXISTS
                   (SELECT 1 FROM annotations a WHERE a.image_id = i.id AND a.label_id = ? AND a.deleted = 0)
                   ORDER BY i.path""", (label_id,)).fetchall()
        return [row["id"] for row in rows]

    @staticmethod
    def _refresh_done(conn: sqlite3.Connection, image_id: int | None) -> None:
        where = "" if image_id is None else "AND id = ?"
        params = () if image_id is None else (image_id,)
        conn.execute(f"""UPDATE images SET done = 0 WHERE done = 1 {where} AND NOT EXISTS
                         (SELECT 1 FROM annotations a WHERE a.image_id = images.id AND a.deleted = 0)""", params)

    @staticmethod
    def _annotation(row: sqlite3.Row) -> AnnotationRow:
        return AnnotationRow(id=row["id"], image_id=row["image_id"], label_id=row["label_id"], rle=json.loads(row["rle"]),
                             clicks=json.loads(row["clicks"]), area=row["area"], bbox=json.loads(row["bbox"]),
                             score=row["score"], created_at=row["created_at"])

    @staticmethod
    def _require_label(conn: sqlite3.Connection, label_id: int) -> None:
        if conn.execute("SELECT 1 FROM labels WHERE id = ? AND deleted = 0", (label_id,)).fetchone() is None:
            raise NotFound(f"label {label_id} does not exist")

    @staticmethod
    def _require_image(conn: sqlite3.Connection, image_id: int) -> None:
        if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
            raise NotFound(f"image {image_id} does not exist")


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
"""Control, format (zero-width, bidi overrides, soft hyphen), surrogate, private-use and unassigned code points."""
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")  # Hangul fillers: letters that draw nothing


def _visible(name: str) -> str:
    """NFC, whitespace collapsed to single spaces, control and invisible characters removed."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or (unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
                                       and ch not in _INVISIBLE_LETTERS))
    return unicodedata.normalize("NFC", " ".join(text.split()))


def clean_label_name(name: str) -> str:
    """A label name as stored: Unicode NFC, whitespace collapsed, control and invisible characters removed."""
    cleaned = _visible(name)
    if not cleaned:
        raise ValueError("label name must have at least one visible character")
    if len(cleaned) > 100:
        raise ValueError("label name must be 1-100 characters")
    return cleaned


def label_key(name: str) -> str:
    """What two live label names must not share: the visible name case-folded and compatibility-normalised
    (NFKC), without variation selectors, so names that look the same cannot both exist."""
    folded = unicodedata.normalize("NFKC", _visible(name).casefold())
    return "".join(ch for ch in folded if not (0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF))
