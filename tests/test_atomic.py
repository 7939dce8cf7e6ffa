"""deployzoo.atomic: a file or folder appears whole under its name, or not at all."""

import pytest

from deployzoo.atomic import atomic_path, write_json, write_text


def test_a_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "sub" / "report.md"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_text(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["report.md"]


def test_files_and_folders_are_renamed_into_place(tmp_path):
    assert write_json({"a": 1}, tmp_path / "x.json").read_text() == '{\n  "a": 1\n}'
    (tmp_path / "repo").mkdir()  # an empty folder may be replaced
    with atomic_path(tmp_path / "repo") as tmp:
        (tmp / "m" / "1").mkdir(parents=True)
        (tmp / "m" / "config.pbtxt").write_text("name: 'm'")
    assert (tmp_path / "repo" / "m" / "config.pbtxt").read_text() == "name: 'm'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "x.json"]
