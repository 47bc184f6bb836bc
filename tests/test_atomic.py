"""fdpg_ray.atomic: the one writer of files and folders that others read."""

import pytest

from fdpg_ray.atomic import atomic_directory, atomic_write, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "old\n")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_the_temporary_keeps_the_suffix_for_writers_that_choose_a_format_by_it(tmp_path):
    seen = []
    atomic_write(tmp_path / "curves.png", lambda tmp: seen.append(tmp.suffix) or tmp.write_bytes(b"png"))
    assert seen == [".png"]


def test_a_directory_replaces_the_old_one_only_when_its_block_succeeds(tmp_path):
    dest = tmp_path / "final"
    with atomic_directory(dest) as tmp:
        (tmp / "config.json").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as tmp:
            (tmp / "config.json").write_text("2")
            raise RuntimeError("killed")
    assert (dest / "config.json").read_text() == "1"
    with atomic_directory(dest) as tmp:
        (tmp / "weights").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["weights"]  # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_overwrite_false_keeps_a_folder_that_another_process_finished_first(tmp_path):
    dest = tmp_path / "smollm2"
    with atomic_directory(dest, overwrite=False) as tmp:
        (tmp / "ours").write_text("")
        dest.mkdir()  # the other converter wins the race
        (dest / "theirs").write_text("")
    assert [p.name for p in dest.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]
