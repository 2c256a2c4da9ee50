"""The ``recognize`` command: scan a folder, read results, manage models and state."""

from __future__ import annotations

import errno
import json
import logging
import signal
import sys
import threading
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the heavy libraries load in the commands that use them: --help is quick
    from ex_app.engine import Engine
    from ex_app.sources.fetch import FileFetcher

FOLDER = click.Path(file_okay=False, path_type=Path)
DISK_ERRORS = ("disk I/O error", "database or disk is full", "No space left")
TASK_WIDTH = 44  # the task column of `models list`; a longer description is cut
STOP_REQUEST = "recognize.stop"  # ctx.meta key: a SIGTERM that came while a worker started


def _stop_request() -> threading.Event:
    """An event that SIGTERM sets: a worker told to stop while it still loads its libraries
    and models exits cleanly once they are loaded, claiming nothing (not killed by -15)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


@contextmanager
def _clear_errors(*errors: type[Exception]):
    """These errors end the command with their message, not a traceback."""
    try:
        yield
    except errors as error:
        raise click.ClickException(str(error)) from error


def _echo_rows(rows: list, as_json: bool, line) -> None:
    """Print dataclass rows as JSON, or each as ``line(row)``."""
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], indent=1))
    else:
        for row in rows:
            click.echo(line(row))


class RecognizeGroup(click.Group):
    """The command group: each command gets the Engine (ctx.obj) as its first argument, and a
    full or failing disk under the data folder ends a command with one clear line, not a
    traceback (what was done is kept: the next run goes on)."""

    group_class = type  # the subgroups (person, face, ...) are RecognizeGroups too

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda function: register(click.pass_obj(function))

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import OperationalError

        try:
            return super().invoke(ctx)
        except (OSError, OperationalError) as error:
            if isinstance(error, OSError) and error.errno != errno.ENOSPC:
                raise
            if isinstance(error, OperationalError) and not any(e in str(error) for e in DISK_ERRORS):
                raise
            raise click.ClickException("the disk is full (or failing) under the data folder: "
                                       f"{error}; free some space and run the command again, it "
                                       "goes on where it stopped") from error


@click.group(cls=RecognizeGroup)
@click.option("--data-dir", type=FOLDER, help="Folder for all state: database, models, caches. "
              "[env: RECOGNIZE_DATA_DIR; default: APP_PERSISTENT_STORAGE, else a per-user "
              "data folder]")
@click.option("--model-mirror", type=FOLDER, help="Local folder to take model files from before "
              "any download. [env: RECOGNIZE_MODEL_MIRROR]")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None, model_mirror: Path | None, verbose: bool) -> None:
    """Recognize: private tagging of photos (faces into persons, objects, scenes)."""
    if ctx.invoked_subcommand == "worker":  # before the slow imports below
        ctx.meta[STOP_REQUEST] = _stop_request()
    from ex_app.config import Settings
    from ex_app.engine import Engine

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    flags = {"data_dir": data_dir, "model_mirror": model_mirror}
    ctx.obj = Engine(Settings(**{k: v for k, v in flags.items() if v is not None}))


@main.command()
@click.argument("folder", type=click.Path(exists=True, path_type=Path))
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--queue-only", is_flag=True, help="Record the files and send them to the workers "
              "(`recognize worker`) without waiting.")
@click.option("--urgent", is_flag=True, help="Before the backlog, as a Files-menu request is.")
def scan(engine: Engine, folder: Path, progress: bool | None, queue_only: bool, urgent: bool) -> None:
    """Analyze the new and changed media files below FOLDER (or the one media file FOLDER,
    recorded under its folder).

    The files go through the work queue: this command works on them too, and other
    workers on the same queue help.
    """
    from tqdm import tqdm

    from ex_app.models.store import ModelUnavailable
    from ex_app.media.kinds import media_kind
    from ex_app.work.queue import REQUEST

    only = None
    if not folder.is_dir():
        if media_kind(folder.name) is None:
            raise click.ClickException(f"{folder} is not a media file this app analyzes")
        folder, only = folder.absolute().parent, folder.name
    if urgent:
        sent: set[int] = set()
        root_id, sync = engine.sync_local(folder, sent.update, only)
        count = engine.queue.enqueue_files(engine.sessions, sent, REQUEST)
        engine.queue.enqueue_pending(engine.sessions, root_id, skip=sent)  # left from before
        click.echo(f"{sync.added} new, {sync.changed} changed; {count} files sent first")
        return
    bar = tqdm(total=0, unit="file", disable=None if progress is None else not progress)

    def planned(count: int) -> None:
        bar.total = count
        bar.refresh()

    with closing(bar), _clear_errors(ModelUnavailable):
        report = engine.scan(folder, on_planned=planned, on_file_done=lambda _: bar.update(),
                             wait=not queue_only, only=only)
    s = report.sync
    failed = f", {report.failed} failed" if report.failed else ""
    click.echo(f"{s.added} new, {s.changed} changed, {s.removed} removed, "
               f"{s.unchanged} unchanged; {_plural(report.processed - report.failed, 'file')} "
               f"analyzed{failed}; {_plural(report.persons, 'person')}")


def _plural(count: int, word: str) -> str:
    """1 file, 2 files."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@main.command()
@click.option("--exit-when-done", is_flag=True, help="Stop once no task it can do is pending "
              "(else: run until SIGTERM or Ctrl-C).")
def worker(engine: Engine, exit_when_done: bool) -> None:
    """Work through the queue: this machine or another, same queue and database URLs.
    Nextcloud's files too where AppAPI's variables are set (NEXTCLOUD_URL, APP_ID,
    APP_SECRET, APP_VERSION, AA_VERSION).

    Runs at low CPU and I/O priority, within the host's CPU budget, holding back in quiet
    hours and while paused. [env: RECOGNIZE_QUEUE_URL, RECOGNIZE_DATABASE_URL]
    """
    from ex_app.work.neighbour import lift_memory_cap, lower_priorities
    from ex_app.work.worker import worker_fetcher  # with the libraries: loaded before the
    # memory cap, which is for the models and the files (a library mapped under it fails)

    lower_priorities(engine.settings)
    try:
        with closing(worker_fetcher(engine.settings)) as fetcher:
            _work(engine, fetcher, exit_when_done, click.get_current_context().meta[STOP_REQUEST])
    except (MemoryError, ImportError) as error:  # a file's is that file's error: this is start-up
        if isinstance(error, ImportError) and "failed to map" not in str(error):
            raise  # not the memory cap: a library that is not installed
        lift_memory_cap()
        raise click.ClickException(f"RECOGNIZE_WORKER__MEMORY_MB={engine.settings.worker.memory_mb}"
                                   " is too little to load the models") from error


def _work(engine: Engine, fetcher: FileFetcher, exit_when_done: bool, stop: threading.Event) -> None:
    """The worker's run, with its fetcher; ``stop``: SIGTERM came while it started."""
    from ex_app.models.store import ModelUnavailable
    from ex_app.store.files import work_left

    if stop.is_set():
        from ex_app.work.claims import worker_name

        click.echo(f"0 files analyzed by worker {worker_name()}: stopped while it started")
        return
    runner = engine.worker(fetcher)
    runner.stop_on_signals()
    if stop.is_set():  # while the models were loaded
        runner.stopping.set()

    def done() -> bool:
        return not work_left(engine.sessions, sources=runner.processor.fetcher.sources)

    with _clear_errors(ModelUnavailable):
        processed = runner.run(until=done if exit_when_done else None)
    click.echo(f"{processed} files analyzed by worker {runner.name}")


@main.command()
def pause(engine: Engine) -> None:
    """Hold back every worker of this queue (on all machines) after its current file."""
    engine.queue.pause()
    click.echo("paused")


@main.command()
def resume(engine: Engine) -> None:
    """Let the workers of this queue go on."""
    engine.queue.resume()
    click.echo("resumed")


@main.command()
def retry(engine: Engine) -> None:
    """Send the dead-lettered files (status error) to the workers again, with fresh attempts."""
    from ex_app.work.claims import revive_dead

    with engine.sessions.begin() as session:
        file_ids = revive_dead(session)
    engine.queue.enqueue_files(engine.sessions, file_ids)
    click.echo(f"{len(file_ids)} files sent again")


@main.command()
@click.option("--json", "as_json", is_flag=True, required=True, help="Print JSON (the only format).")
@click.option("--root", type=FOLDER, help="Only files of this scanned folder.")
def export(engine: Engine, as_json: bool, root: Path | None) -> None:
    """Print all results: files with their tags, labels and faces, and persons."""
    from sqlalchemy import select

    from ex_app.people.clustering import QualityGate
    from ex_app.sinks.json_export import export_results
    from ex_app.store import schema

    with engine.sessions() as session:
        root_id = None
        if root is not None:
            local = schema.Root.source == schema.Source.LOCAL
            at_root = schema.Root.location == str(root.resolve())
            root_id = session.scalar(select(schema.Root.id).where(local, at_root))
            if root_id is None:
                raise click.ClickException(f"{root} has not been scanned")
        gate = QualityGate.from_settings(engine.settings)
        click.echo(json.dumps(export_results(session, gate, root_id), indent=1))


@main.command()
@click.option("--all", "include_hidden", is_flag=True, help="Hidden persons too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def persons(engine: Engine, include_hidden: bool, as_json: bool) -> None:
    """List persons: named first, then by number of faces."""
    from ex_app.people import operations

    with engine.sessions() as session:
        summaries = operations.list_persons(session, include_hidden=include_hidden)

    def line(p) -> str:
        flags = ("  [hidden]" if p.hidden else "") + ("  [confirmed]" if p.confirmed else "")
        return (f"{p.id:>6}  {p.faces:>5} faces  {p.photos:>5} photos  cover face "
                f"{p.cover_face_id}  {p.name or '(unnamed)'}{flags}")

    _echo_rows(summaries, as_json, line)
    if not as_json:
        click.echo(f"{len(summaries)} persons")


@main.group()
def person() -> None:
    """Correct persons: name, merge, hide, say two differ. Decisions survive re-grouping."""


@person.command("name")
@click.argument("person_id", type=int)
@click.argument("name")
def person_name(engine: Engine, person_id: int, name: str) -> None:
    """Name a person ("" clears the name)."""
    _apply(engine, "rename", person_id, name)


@person.command("merge")
@click.argument("into_id", type=int)
@click.argument("other_ids", type=int, nargs=-1, required=True)
def person_merge(engine: Engine, into_id: int, other_ids: tuple[int, ...]) -> None:
    """Merge OTHER_IDS into INTO_ID."""
    _apply(engine, "merge", into_id, list(other_ids))


@person.command("hide")
@click.argument("person_id", type=int)
@click.option("--show", is_flag=True, help="Show a hidden person again.")
def person_hide(engine: Engine, person_id: int, show: bool) -> None:
    """Hide a person from listings."""
    _apply(engine, "set_hidden", person_id, not show)


@person.command("distinct")
@click.argument("person_id", type=int)
@click.argument("other_id", type=int)
def person_distinct(engine: Engine, person_id: int, other_id: int) -> None:
    """Say two persons are not the same (no more merge suggestions for them)."""
    _apply(engine, "mark_distinct", person_id, other_id)


@person.command("suggestions")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def person_suggestions(engine: Engine, as_json: bool) -> None:
    """Pairs of persons that may be the same human, closest first."""
    from ex_app.people import operations
    from ex_app.people.distances import face_distances

    with engine.sessions() as session:
        found = operations.suggest_merges(session, face_distances(engine.settings).suggestion,
                                          embedder=engine.settings.faces.embedder)
    _echo_rows(found, as_json,
               lambda s: f"{s.person_id:>6} ~ {s.other_id:<6} distance {s.distance:.3f}")


@main.group()
def face() -> None:
    """Correct faces: move one to another person, take one out of its person, see it."""


@face.command("move")
@click.argument("face_id", type=int)
@click.argument("person_id", type=int, required=False)
def face_move(engine: Engine, face_id: int, person_id: int | None) -> None:
    """Move a face to PERSON_ID (to a new person when it is left out)."""
    person_id = _apply(engine, "move_face", face_id, person_id)
    click.echo(f"face {face_id} is in person {person_id}")


@face.command("remove")
@click.argument("face_id", type=int)
def face_remove(engine: Engine, face_id: int) -> None:
    """Take a face out of its person; it never returns to it."""
    _apply(engine, "remove_face", face_id)


@face.command("thumbnail")
@click.argument("face_id", type=int)
@click.option("--size", type=click.IntRange(16, 1024), default=256, show_default=True)
def face_thumbnail(engine: Engine, face_id: int, size: int) -> None:
    """Print the path of a cached square thumbnail of the face."""
    from ex_app.media.errors import MediaError
    from ex_app.people import thumbnails
    from ex_app.sources.local import local_file

    s = engine.settings
    with engine.sessions() as session, _clear_errors(thumbnails.FaceMissing, MediaError):
        path = thumbnails.face_thumbnail(session, face_id, s.cache_dir, local_file, size=size,
                                         max_pixels=s.images.max_pixels,
                                         video_timeout=s.video.decode_timeout_seconds)
    click.echo(str(path))


@main.command()
def regroup(engine: Engine) -> None:
    """Group all faces again from scratch; user decisions are kept."""
    click.echo(f"{engine.regroup(full=True)} persons")


def _apply(engine: Engine, operation: str, *args):
    """Run one person/face operation (a function of ex_app.people.operations, by name) in a
    transaction that marks the files whose person names change for the tag sink; unknown
    ids are a clear error."""
    from ex_app.people import operations
    from ex_app.store.outbox import person_tag_changes

    with _clear_errors(operations.NotFound), engine.sessions.begin() as session:
        with person_tag_changes(session):
            return getattr(operations, operation)(session, *args)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(engine: Engine, as_json: bool) -> None:
    """Counts of files by status, faces, persons and tags."""
    from sqlalchemy import func, select

    from ex_app.sinks.json_export import overall_status
    from ex_app.store import schema

    with engine.sessions() as session:
        task_statuses: dict[int, set[str]] = {
            file_id: set() for file_id in session.scalars(select(schema.File.id))
        }
        for file_id, status in session.execute(select(schema.Task.file_id, schema.Task.status)):
            task_statuses[file_id].add(status)
        statuses = Counter(overall_status(file_statuses) for file_statuses in task_statuses.values())
        files = func.count(schema.FileTag.file_id.distinct())  # tagged by two analyzers: once
        by_tag = select(schema.FileTag.tag, files).group_by(schema.FileTag.tag)
        tags = dict(session.execute(by_tag.order_by(files.desc(), schema.FileTag.tag)).all())
        faces = select(func.count(schema.Face.id))
        figures = {
            "files": len(task_statuses),
            "by_status": statuses,
            "faces": session.scalar(faces),
            "faces_unassigned": session.scalar(faces.where(schema.Face.person_id.is_(None))),
            "persons": session.scalar(select(func.count(schema.Person.id))),
            "tags": tags,
        }
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
    click.echo(f"files: {figures['files']} ({', '.join(f'{v} {k}' for k, v in statuses.items())})")
    click.echo(f"faces: {figures['faces']} ({figures['faces_unassigned']} unassigned)")
    click.echo(f"persons: {figures['persons']}")
    click.echo("tags: " + ", ".join(f"{tag} {count}" for tag, count in tags.items()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--per-user", is_flag=True, help="JSON: the instance and each user.")
def progress(engine: Engine, as_json: bool, per_user: bool) -> None:
    """Work done and left per analyzer, recent throughput and time left; then per user."""
    from ex_app.analyzers.registry import ANALYZERS
    from ex_app.store.progress import measure_progress, measure_user_progress

    with engine.sessions() as session:
        now = datetime.now(UTC)
        report = measure_progress(session, now)
        users = measure_user_progress(session, now)
    order = [analyzer.name for analyzer in ANALYZERS]  # the registry's order, then the rest
    for rows in (report, *users.values()):
        rows.sort(key=lambda p: order.index(p.analyzer) if p.analyzer in order else len(order))
    if as_json:
        instance = [p.as_dict() for p in report]
        if per_user:
            by_user = {user: [p.as_dict() for p in rows] for user, rows in users.items()}
            click.echo(json.dumps({"instance": instance, "users": by_user}, indent=1))
        else:
            click.echo(json.dumps(instance, indent=1))
        return
    for p in report:
        click.echo(p.line())
    for user, rows in users.items():
        click.echo(f"{user}:")
        for p in rows:
            click.echo("  " + p.line())
    try:
        paused = engine.queue.paused
    except Exception as error:  # noqa: BLE001 (the counts above stand without it)
        click.echo(f"the queue is unreachable: {error}")
        return
    if paused:
        click.echo("workers are paused (`recognize resume`)")


@main.command()
@click.option("--all", "everything", is_flag=True, help="Forget every file and result.")
@click.option("--faces", is_flag=True, help="Forget faces and persons; faces are found again.")
@click.option("--clusters", is_flag=True, help="Forget persons; faces are grouped again.")
@click.option("--errors", is_flag=True, help="Retry files that failed.")
def reset(engine: Engine, everything: bool, faces: bool, clusters: bool, errors: bool) -> None:
    """Forget some state so that the next scan redoes that work."""
    from sqlalchemy import delete, update

    from ex_app.store import schema
    from ex_app.work.claims import revive_dead
    from ex_app.analyzers.registry import FACE_FINDING_ANALYZERS

    if not (everything or faces or clusters or errors):
        raise click.UsageError("say what to reset: --all, --faces, --clusters or --errors")
    with engine.sessions.begin() as session:
        if everything:
            session.execute(delete(schema.Root))
            session.execute(delete(schema.Person))
        if faces:
            session.execute(delete(schema.Face))
            session.execute(
                update(schema.Task)
                .where(schema.Task.analyzer.in_(FACE_FINDING_ANALYZERS))
                .values(status=schema.TaskStatus.PENDING)
            )
        if faces or clusters:
            session.execute(update(schema.Face).values(person_id=None))
            session.execute(delete(schema.Person))
        if errors:
            revive_dead(session)
    click.echo("reset done")


@main.group()
def models() -> None:
    """The model files: list them, fetch them."""


@models.command("list")
def models_list(engine: Engine) -> None:
    """Each model with its task, the analyzers that use it, its size and whether it is present."""
    from ex_app.analyzers.registry import ANALYZERS

    users: dict[str, list[str]] = {}
    for analyzer in ANALYZERS:
        for name in analyzer.models(engine.settings):
            users.setdefault(name, []).append(analyzer.name)
    statuses = engine.models.status()
    name_width = max((len(status.name) for status in statuses), default=0)
    used_width = max((len(",".join(names)) for names in users.values()), default=0)
    for status in statuses:
        where = str(status.path) if status.present else "missing"
        task = status.task if len(status.task) <= TASK_WIDTH else status.task[: TASK_WIDTH - 1] + "…"
        used = ",".join(users.get(status.name, ["-"]))
        click.echo(f"{status.name:<{name_width}}  {task:<{TASK_WIDTH}}  {used:<{used_width}}  "
                   f"{status.size / 1e6:>7.1f} MB  {where}")


@models.command("fetch")
@click.argument("names", nargs=-1)
def models_fetch(engine: Engine, names: tuple[str, ...]) -> None:
    """Fetch and verify models (every model an analyzer uses when no NAMES are given; the files
    they are made from come along as needed); the ones that cannot be had are listed at the
    end, and fail the command unless only optional analyzers need them."""
    from tqdm import tqdm

    from ex_app.models.store import ModelUnavailable
    from ex_app.analyzers.registry import ANALYZERS, needed_models

    manifest = engine.models.manifest
    required, optional = needed_models(engine.settings, ANALYZERS)
    missing: list[str] = []
    for name in names or tuple(required + optional):
        if name not in manifest:
            raise click.ClickException(f"unknown model {name!r}; known: {', '.join(manifest)}")
        with tqdm(total=manifest[name].size, unit="B", unit_scale=True, desc=name, disable=None) as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                path = engine.models.fetch(name, progress=advance)
            except ModelUnavailable as error:
                click.echo(f"{name}: not available: {error}", err=True)
                missing.append(name)
                continue
        click.echo(f"{name}: {path}")
    needed = [name for name in missing if names or name not in optional]
    if needed:
        raise click.ClickException(f"could not fetch {', '.join(needed)}")


@main.group()
def contacts() -> None:
    """Names from contacts: persons whose faces match a contact's photo are offered its name."""


def _embed_contact_photo(engine: Engine):
    from ex_app.analyzers.faces import face_analyzer
    from ex_app.people.clustering import QualityGate
    from ex_app.people.contacts import contact_face

    s = engine.settings
    engine.fetch_models()
    gate = QualityGate.from_settings(s)
    return lambda photo: contact_face(engine.pipeline.part(face_analyzer), gate, photo,
                                      s.images.max_side, s.images.max_pixels)


@contacts.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--user", help="For this Nextcloud user's persons (default: the local scans').")
def contacts_import(engine: Engine, file: Path, user: str | None) -> None:
    """Read a .vcf address book: each contact photo with one clear face can name a person."""
    from ex_app.sources.contacts import ContactsError
    from ex_app.work.contacts import import_vcf

    embed = _embed_contact_photo(engine)
    with _clear_errors(ContactsError):
        report = import_vcf(engine.sessions, file, user, embed, engine.settings.faces.embedder)
    click.echo(f"{report.contacts} contacts, {report.faces} with one clear face")
    for name, why in report.skipped.items():
        click.echo(f"  {name}: {why}")


@contacts.command("suggestions")
@click.option("--user", help="This Nextcloud user's persons (default: the local scans').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def contacts_suggestions(engine: Engine, user: str | None, as_json: bool) -> None:
    """Persons that may be a contact: "PERSON is NAME?"."""
    from ex_app.people.contacts import suggest_names

    with engine.sessions() as session:
        found = suggest_names(session, user, engine.settings.faces.embedder)
    _echo_rows(found, as_json, lambda s: f"{s.person_id:>6} is {s.name}?")


@contacts.command("accept")
@click.argument("person_id", type=int)
def contacts_accept(engine: Engine, person_id: int) -> None:
    """Name the person with the contact name offered to it."""
    from ex_app.people.contacts import accept

    offered = _decide_offer(engine, accept, person_id, engine.settings.faces.embedder)
    click.echo(f"person {person_id} is {offered}")


@contacts.command("reject")
@click.argument("person_id", type=int)
def contacts_reject(engine: Engine, person_id: int) -> None:
    """The person is not the contact offered: that name is never offered to it again."""
    from ex_app.people.contacts import reject

    _decide_offer(engine, reject, person_id)


def _decide_offer(engine: Engine, action, person_id: int, *args) -> str:
    """Accept or reject the contact name offered to the person; returns that name."""
    from ex_app.people.contacts import suggestion_for
    from ex_app.people.operations import ANYONE, NotFound

    with _clear_errors(NotFound), engine.sessions.begin() as session:
        found = suggestion_for(session, person_id, ANYONE, engine.settings.faces.embedder)
        if found is None:
            raise click.ClickException(f"no contact name is offered to person {person_id}")
        action(session, person_id, found.name, ANYONE, *args)
    return found.name
