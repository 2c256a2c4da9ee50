"""The database tables: scanned roots, files, per-analyzer task state and results, persons."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import (
    BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _cascading_key(target: str) -> ForeignKey:
    """A foreign key to target ("table.id") whose rows are deleted with the row they name."""
    return ForeignKey(target, ondelete="CASCADE")


class Base(DeclarativeBase):
    pass


class Source(StrEnum):
    """Where a root's files come from (the roots table's ``source``)."""

    LOCAL = "local"  # a folder on this machine; the root's location is its absolute path
    NEXTCLOUD = "nextcloud"  # a Nextcloud user's files; the location is the user id


class Root(Base):
    """A scanned tree: a local folder, or a Nextcloud user's files."""

    __tablename__ = "roots"
    __table_args__ = (UniqueConstraint("source", "location"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    location: Mapped[str] = mapped_column(Text)
    files: Mapped[list["File"]] = relationship(back_populates="root", cascade="all, delete-orphan")


class File(Base):
    """One media file, identified by its path inside a root."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("root_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int] = mapped_column(_cascading_key("roots.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    remote_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # Nextcloud file id

    root: Mapped[Root] = relationship(back_populates="files")
    tasks: Mapped[list["Task"]] = relationship(back_populates="file", cascade="all, delete-orphan")
    faces: Mapped[list["Face"]] = relationship(back_populates="file", cascade="all, delete-orphan")
    labels: Mapped[list["Label"]] = relationship(cascade="all, delete-orphan")
    tags: Mapped[list["FileTag"]] = relationship(cascade="all, delete-orphan")


class TaskStatus:
    PENDING = "pending"
    DONE = "done"
    ERROR = "error"  # the dead-letter state: a bad file, or one that kept failing (see error)


class Task(Base):
    """The state of one analyzer on one file."""

    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("file_id", "analyzer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(_cascading_key("files.id"), index=True)
    analyzer: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The work queue's hold on the task (ex_app.work.queue): a worker's claim lasts until
    # lease_until, a retry waits until then; worker names who claimed it last.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    worker: Mapped[str | None] = mapped_column(String(128))

    file: Mapped[File] = relationship(back_populates="tasks")


class Person(Base):
    """A group of faces believed to be one human.

    A confirmed person is one the user acted on (named, merged, moved a face into): a
    re-grouping never splits it, dissolves it or merges it with another.
    """

    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Whose faces these are: the Nextcloud user of the faces' root (None for local scans).
    # Faces are only ever grouped with faces of the same owner.
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Its prototypes (people.clustering.person_prototypes): k × 128 float32, k ≥ 1.
    centroid: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedder: Mapped[str | None] = mapped_column(String(16))  # the embedder of the prototypes
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    faces: Mapped[list["Face"]] = relationship(back_populates="person")


class Face(Base):
    """A detected face: where it is, how good it is, its embedding and its person."""

    __tablename__ = "faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(_cascading_key("files.id"), index=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    pose: Mapped[float] = mapped_column(Float, default=1.0)
    landmarks: Mapped[bytes] = mapped_column(LargeBinary)  # 5×2 float32, original pixels
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # 128 float32
    # The embedder that made the embedding ("sface", "dlib"); faces before it was recorded: dlib.
    embedder: Mapped[str] = mapped_column(String(16), server_default="dlib", index=True)
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # the user put it in its person
    # A video's face: seconds from the start to the frame it was found in (its thumbnail's
    # frame); None for photos, and for video faces found before it was recorded.
    frame_time: Mapped[float | None] = mapped_column(Float)

    file: Mapped[File] = relationship(back_populates="faces")
    person: Mapped[Person | None] = relationship(back_populates="faces")


class FaceRejection(Base):
    """The user said this face is not this person: it never joins that person again."""

    __tablename__ = "face_rejections"

    face_id: Mapped[int] = mapped_column(_cascading_key("faces.id"), primary_key=True)
    person_id: Mapped[int] = mapped_column(
        _cascading_key("persons.id"), primary_key=True, index=True
    )


class DistinctPersons(Base):
    """The user said these two persons are not the same: never suggested for merging."""

    __tablename__ = "distinct_persons"

    person_id: Mapped[int] = mapped_column(_cascading_key("persons.id"), primary_key=True)
    other_id: Mapped[int] = mapped_column(_cascading_key("persons.id"), primary_key=True)


class Label(Base):
    """A classifier label (ImageNet class) with its score."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(_cascading_key("files.id"), index=True)
    label_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)


class FileTag(Base):
    """A human tag given to a file, and the analyzer whose results gave it."""

    __tablename__ = "file_tags"

    file_id: Mapped[int] = mapped_column(_cascading_key("files.id"), primary_key=True)
    analyzer: Mapped[str] = mapped_column(String(32), primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)


class SinkTag(Base):
    """A tag this app assigned to a Nextcloud file: only these are ever taken off again."""

    __tablename__ = "sink_tags"

    remote_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), primary_key=True)


class ContactBook(Base):
    """An address book whose contact photos may name persons: one of a Nextcloud user's
    CardDAV address books (its href), or a .vcf file imported on the command line (its path,
    owner None). ``sync_token`` is the book's as last read, ``embedder`` the one its faces
    were embedded with: the book is read again when either changes."""

    __tablename__ = "contact_books"
    __table_args__ = (UniqueConstraint("owner", "location"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    location: Mapped[str] = mapped_column(Text)
    sync_token: Mapped[str] = mapped_column(Text)
    embedder: Mapped[str] = mapped_column(String(16))
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    faces: Mapped[list["ContactFace"]] = relationship(cascade="all, delete-orphan")


class ContactFace(Base):
    """The one clear face of a contact's photo, embedded, with the contact's name."""

    __tablename__ = "contact_faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    book_id: Mapped[int] = mapped_column(_cascading_key("contact_books.id"), index=True)
    uid: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # 128 float32


class ContactRejection(Base):
    """The user said this person is not the contact of that name: never suggested again."""

    __tablename__ = "contact_rejections"

    person_id: Mapped[int] = mapped_column(_cascading_key("persons.id"), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)


class SinkOutbox(Base):
    """A mark of what a sink must still do for a file (ex_app.store.outbox): written in the
    transaction that made it due, deleted by the drainer that did it."""

    __tablename__ = "sink_outbox"
    __table_args__ = (Index("ix_sink_outbox_sink_lease_until", "sink", "lease_until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sink: Mapped[str] = mapped_column(String(32))
    file_id: Mapped[int] = mapped_column(_cascading_key("files.id"), index=True)
    user: Mapped[str | None] = mapped_column(String(64))  # who is told (a Files menu request)
    request: Mapped[str | None] = mapped_column(String(32))  # the marks of one request share it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A drainer's hold lasts until lease_until; after a failure no drainer takes it before then.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    drainer: Mapped[str | None] = mapped_column(String(32))  # the take that holds it
