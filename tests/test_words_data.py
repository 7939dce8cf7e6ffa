
import lmdb
import pytest
from conftest import png_bytes, word_image

from deployzoo.data.words import (FolderWordSet, LmdbWordSet, convert_word_set, open_word_set, write_folder,
                                  write_lmdb)
from deployzoo.errors import DatasetError


def _samples(n=5):
    return [(png_bytes(word_image(f"w{i}")), f"Word {i}!") for i in range(n)]


def test_lmdb_layout_is_deep_text_recognition_benchmark(tmp_path):
    assert write_lmdb(tmp_path / "db", _samples(3)) == 3
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"num-samples") == b"3"
        assert txn.get(b"label-000000001") == b"Word 0!"  # 1-based keys, raw labels
        assert txn.get(b"image-000000003") is not None and txn.get(b"image-000000004") is None
    env.close()
    ds = open_word_set(tmp_path / "db")
    assert isinstance(ds, LmdbWordSet) and len(ds) == 3
    assert ds[0].key == "image-000000001" and ds[2].label == "Word 2!"
    with pytest.raises(IndexError):
        ds[3]


def test_folder_layout_with_spaces_in_labels_and_missing_label(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    word_image("a").save(d / "a.png")
    (d / "gt.txt").write_text("a.png New York\n\nb.png\n")
    ds = open_word_set(d)
    assert isinstance(ds, FolderWordSet) and len(ds) == 2
    assert ds[0].label == "New York" and ds[0].error is None
    assert ds[1].error == "gt.txt line 3: no label"


def test_round_trip_folder_lmdb_folder(tmp_path):
    src = tmp_path / "src"
    assert write_folder(src, _samples(4)) == 4
    rep = convert_word_set(src, tmp_path / "db")
    assert (rep.to, rep.written, rep.skipped) == ("lmdb", 4, [])
    rep2 = convert_word_set(tmp_path / "db", tmp_path / "back")
    assert rep2.to == "folder" and rep2.written == 4
    a, b = open_word_set(src), open_word_set(tmp_path / "back")
    for i in range(4):
        assert a[i].label == b[i].label
        assert a[i].path.read_bytes() == b[i].path.read_bytes() == open_word_set(tmp_path / "db")[i].data


def test_converter_skips_and_reports_bad_samples(word_folder, tmp_path):
    rep = convert_word_set(word_folder, tmp_path / "db")
    skipped = dict(rep.skipped)
    assert set(skipped) == {"img/bad.png", "img/empty.jpg"}
    assert "truncated or corrupt" in skipped["img/bad.png"] and "empty" in skipped["img/empty.jpg"]
    assert rep.written == 7 and len(open_word_set(tmp_path / "db")) == 7


def test_writers_leave_nothing_behind_when_interrupted(tmp_path):
    def broken():
        yield _samples(1)[0]
        raise RuntimeError("disk full")

    for writer, name in ((write_lmdb, "db"), (write_folder, "f")):
        with pytest.raises(RuntimeError):
            writer(tmp_path / name, broken())
        assert list(tmp_path.iterdir()) == [], f"{writer.__name__} left files behind"


def test_writers_refuse_to_overwrite(tmp_path):
    (tmp_path / "db").mkdir()
    with pytest.raises(DatasetError, match="already exists"):
        write_lmdb(tmp_path / "db", _samples(1))


def test_bad_data_sets_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_word_set(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="neither an LMDB"):
        open_word_set(tmp_path / "plain")
    # corrupt LMDB: garbage in data.mdb
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "data.mdb").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DatasetError, match="corrupt"):
        open_word_set(tmp_path / "corrupt")
    # LMDB without num-samples
    env = lmdb.open(str(tmp_path / "nonum"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"image-000000001", b"x")
    env.close()
    with pytest.raises(DatasetError, match="num-samples"):
        open_word_set(tmp_path / "nonum")


def test_lmdb_with_missing_sample_keys_reports_per_sample(tmp_path):
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
        txn.put(b"image-000000001", png_bytes(word_image("a")))
        txn.put(b"label-000000001", b"a")
    env.close()
    ds = open_word_set(tmp_path / "db")
    assert ds[0].error is None and "image key missing" in ds[1].error
