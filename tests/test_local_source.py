"""The local folder source: which files it offers, and marker files."""

from pathlib import Path

from ex_app.media.kinds import MediaKind
from ex_app.sources.local import walk_local


def touch(root: Path, relative: str, content: bytes = b"x") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def found(root: Path) -> dict[str, MediaKind]:
    return {f.path: f.kind for f in walk_local(root)}


def test_media_files_with_kind_size_and_relative_posix_paths(tmp_path):
    touch(tmp_path, "a.JPG", b"12345")
    touch(tmp_path, "music/song.mp3")
    touch(tmp_path, "clips/holiday.mp4")
    touch(tmp_path, "notes.txt")
    touch(tmp_path, ".hidden.jpg")
    touch(tmp_path, ".thumbs/x.jpg")
    files = list(walk_local(tmp_path))
    assert {f.path: f.kind for f in files} == {
        "a.JPG": MediaKind.IMAGE,
        "clips/holiday.mp4": MediaKind.VIDEO,
        "music/song.mp3": MediaKind.AUDIO,
    }
    assert next(f for f in files if f.path == "a.JPG").size == 5


def test_nomedia_excludes_its_folder_and_everything_below(tmp_path):
    touch(tmp_path, "keep.jpg")
    touch(tmp_path, "private/.nomedia", b"")
    touch(tmp_path, "private/a.jpg")
    touch(tmp_path, "private/deep/er/b.png")
    touch(tmp_path, "private/deep/song.flac")
    assert found(tmp_path) == {"keep.jpg": MediaKind.IMAGE}


def test_kind_markers_exclude_only_their_kind(tmp_path):
    touch(tmp_path, "mixed/.noimage", b"")
    touch(tmp_path, "mixed/a.jpg")
    touch(tmp_path, "mixed/sub/b.jpg")
    touch(tmp_path, "mixed/sub/song.mp3")
    touch(tmp_path, "mixed/sub/clip.mov")
    touch(tmp_path, "band/.nomusic", b"")
    touch(tmp_path, "band/live/song.ogg")
    touch(tmp_path, "band/live/cover.jpg")
    touch(tmp_path, "films/.novideo", b"")
    touch(tmp_path, "films/a/clip.mkv")
    touch(tmp_path, "films/a/poster.webp")
    assert found(tmp_path) == {
        "band/live/cover.jpg": MediaKind.IMAGE,
        "films/a/poster.webp": MediaKind.IMAGE,
        "mixed/sub/clip.mov": MediaKind.VIDEO,
        "mixed/sub/song.mp3": MediaKind.AUDIO,
    }


def test_markers_combine_down_the_tree(tmp_path):
    touch(tmp_path, "a/.noimage", b"")
    touch(tmp_path, "a/b/.nomusic", b"")
    touch(tmp_path, "a/b/.novideo", b"")
    touch(tmp_path, "a/b/c/x.jpg")
    touch(tmp_path, "a/b/c/x.mp3")
    touch(tmp_path, "a/b/c/x.mp4")
    touch(tmp_path, "a/y.mp3")
    assert found(tmp_path) == {"a/y.mp3": MediaKind.AUDIO}


def test_a_marker_file_in_a_sibling_does_not_leak(tmp_path):
    touch(tmp_path, "one/.nomedia", b"")
    touch(tmp_path, "one/a.jpg")
    touch(tmp_path, "one_more/b.jpg")
    assert found(tmp_path) == {"one_more/b.jpg": MediaKind.IMAGE}


def test_symlinked_folders_are_not_followed(tmp_path):
    touch(tmp_path, "real/a.jpg")
    (tmp_path / "real" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert found(tmp_path) == {"real/a.jpg": MediaKind.IMAGE}


def test_odd_file_names(tmp_path):
    names = ["ünïcödé 写真.jpg", "with space.png", "semi;colon'quote\".jpeg", "-dash.gif"]
    for name in names:
        touch(tmp_path, name)
    assert set(found(tmp_path)) == set(names)
