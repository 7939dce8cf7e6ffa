import json

import numpy as np
import pytest
from conftest import word_image

import deployzoo
from deployzoo.cli import main
from deployzoo.data.words import convert_word_set


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("crnn", "volo_d2", "ocrnet_hr18"):
        assert name in out


def test_eval_end_to_end_counts_errors_and_dropped(word_folder, crnn_seeded_ckpt, tmp_path, capsys):
    out_json = tmp_path / "e.json"
    rc = main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt),
               "--batch-size", "4", "--json", str(out_json), "--workers", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "top1 accuracy: " in out and "unreadable img/bad.png" in out
    rep = json.loads(out_json.read_text())
    # 9 lines: '!!' is emptied by normalisation -> dropped; the truncated and the empty image are errors (wrong)
    assert rep["n"] == 8 and rep["dropped"] == 1 and rep["errors"] == 2
    assert rep["accuracy"] == pytest.approx(rep["correct"] / rep["n"])
    preds = {p["key"]: p for p in rep["predictions"]}
    assert preds["img/2.png"]["label"] == "its" and preds["img/4.png"]["label"] == "ab"
    assert not preds["img/bad.png"]["correct"] and "truncated or corrupt" in preds["img/bad.png"]["error"]
    assert "empty" in preds["img/empty.jpg"]["error"]
    # eval's predictions are exactly what the Python API reads from each image on its own
    rec = deployzoo.load("crnn", checkpoint=crnn_seeded_ckpt)
    for key in ("img/0.png", "img/3.png", "img/5.png"):
        r = rec(word_folder / key)
        assert preds[key]["pred"] == r.text
        assert preds[key]["confidence"] == pytest.approx(r.confidence, abs=1e-5)
        assert preds[key]["correct"] == (r.text == preds[key]["label"])


def test_eval_several_sets_gives_count_weighted_total(word_folder, crnn_seeded_ckpt, tmp_path, capsys):
    convert_word_set(word_folder, tmp_path / "db")
    out_json = tmp_path / "e.json"
    assert main(["eval", "crnn", "--data", str(word_folder), str(tmp_path / "db"), "--checkpoint",
                 str(crnn_seeded_ckpt), "--json", str(out_json), "--workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "total (count-weighted)" in out
    rep = json.loads(out_json.read_text())
    assert [d["n"] for d in rep["datasets"]] == [8, 6]  # the LMDB lost the 2 unreadable images in conversion
    assert rep["n"] == 14 and rep["correct"] == sum(d["correct"] for d in rep["datasets"])


def test_eval_with_workers_matches_in_process(word_folder, crnn_seeded_ckpt, tmp_path):
    res = []
    for w in ("0", "2"):
        p = tmp_path / f"{w}.json"
        main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt), "--workers", w,
              "--json", str(p)])
        res.append([(x["key"], x["pred"]) for x in json.loads(p.read_text())["predictions"]])
    assert res[0] == res[1]


def test_eval_lexicon_restricts_predictions(word_folder, crnn_seeded_ckpt, tmp_path):
    (tmp_path / "lex.txt").write_text("hello\nworld\nzoo\n")
    p = tmp_path / "e.json"
    main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt), "--lexicon",
          str(tmp_path / "lex.txt"), "--json", str(p), "--workers", "0"])
    preds = [x for x in json.loads(p.read_text())["predictions"] if "error" not in x]
    assert preds and all(x["pred"] in {"hello", "world", "zoo"} for x in preds)


def test_decode_flag_reaches_the_decoder_and_is_recorded(word_folder, crnn_seeded_ckpt, tmp_path, capsys):
    from deployzoo.process.ctc import greedy_decode, make_decoder
    from deployzoo.process.crnn import pad_batch

    rec = deployzoo.load("crnn", checkpoint=crnn_seeded_ckpt, decode="greedy")
    x, _ = pad_batch([rec.prepare(word_folder / "img" / f"{i}.png") for i in (0, 1, 3)], rec.cfg)
    logits = rec.runner(x)
    for mode, want in (("greedy", greedy_decode(logits)), ("words", make_decoder("words").decode_batch(logits))):
        p = tmp_path / f"{mode}.json"
        assert main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt), "--decode",
                     mode, "--json", str(p), "--workers", "0", "--no-progress"]) == 0
        rep = json.loads(p.read_text())
        assert rep["decoding"] == mode and f"decoding: {mode}" in capsys.readouterr().out
        preds = {x["key"]: x["pred"] for x in rep["predictions"]}
        assert [preds[f"img/{i}.png"] for i in (0, 1, 3)] == [d.text for d in want]
    assert main(["eval", "volo_d2", "--data", str(tmp_path), "--random-weights", "--decode", "greedy"]) != 0
    assert "--decode do(es) not apply to classification models" in capsys.readouterr().err


def test_upright_flag_turns_off_the_turned_reading_in_recognize_eval_and_serve(tmp_path, capsys):
    """The shipped weights read a vertical 'station' only when it is turned; --upright reads it as it stands."""
    from deployzoo.serve import ServeConfig, served_from

    folder = tmp_path / "words"
    (folder / "img").mkdir(parents=True)
    word_image("station").rotate(90, expand=True).save(folder / "img" / "tall.png")
    word_image("museum").save(folder / "img" / "wide.png")
    (folder / "gt.txt").write_text("img/tall.png station\nimg/wide.png museum\n")
    imgs = [str(folder / "img" / "tall.png"), str(folder / "img" / "wide.png")]
    texts = {}
    for flag in ([], ["--upright"]):
        assert main(["recognize", *imgs, "--json", *flag]) == 0
        texts[bool(flag)] = [r["text"] for r in json.loads(capsys.readouterr().out)]
        p = tmp_path / f"e{len(flag)}.json"
        assert main(["eval", "crnn", "--data", str(folder), "--json", str(p), "--workers", "0", "--no-progress",
                     *flag]) == 0
        capsys.readouterr()
        rep = json.loads(p.read_text())
        assert rep["tall_crops_turned_above"] == (None if flag else 1.5)
        assert [x["pred"] for x in sorted(rep["predictions"], key=lambda x: x["key"])] == texts[bool(flag)]
    assert texts[False] == ["station", "museum"]
    assert texts[True][0] != "station" and texts[True][1] == "museum"
    assert main(["eval", "volo_d2", "--data", str(tmp_path), "--random-weights", "--upright"]) != 0
    assert "--upright do(es) not apply to classification models" in capsys.readouterr().err
    served = served_from(None, None, ServeConfig(upright=True, threads=1))
    assert served.make_predictor().tall is None
    assert served_from(None, None, ServeConfig(threads=1)).make_predictor().tall == 1.5


def test_recognize_reports_bad_images_and_reads_the_rest(word_folder, crnn_seeded_ckpt, capsys):
    imgs = [str(word_folder / "img" / "0.png"), str(word_folder / "img" / "bad.png"), str(word_folder / "img")]
    assert main(["recognize", *imgs, "--checkpoint", str(crnn_seeded_ckpt), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [("error" in r) for r in rows] == [False, True, True]
    assert "truncated or corrupt" in rows[1]["error"] and "directory" in rows[2]["error"]
    assert 0.0 <= rows[0]["confidence"] <= 1.0


def test_recognize_without_weights_says_what_to_do(capsys, monkeypatch):
    import dataclasses

    from deployzoo.specs import SPECS

    monkeypatch.setitem(SPECS, "crnn", dataclasses.replace(SPECS["crnn"], default_checkpoint=lambda: None))
    assert main(["recognize", "x.png"]) == 2
    assert "needs --checkpoint FILE" in capsys.readouterr().err


def test_python_api_accepts_paths_pil_arrays_and_lists(crnn_seeded_ckpt):
    rec = deployzoo.load("crnn", checkpoint=crnn_seeded_ckpt)
    img = word_image("hello")
    a = rec(img)
    assert isinstance(a.text, str) and 0 <= a.confidence <= 1
    b = rec(np.asarray(img))
    assert (a.text, a.confidence) == (b.text, b.confidence)
    many = rec([img, np.zeros((0, 3), np.uint8), np.asarray(img)])
    assert many[0].text == a.text and many[1].error and "0 pixels" in many[1].error and many[2].text == a.text


def test_bad_checkpoint_and_data_exit_with_one_clear_line(tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main(["recognize", "x.png", "--checkpoint", str(tmp_path / "bad.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.pth" in err and "truncated or corrupt" in err
    assert main(["eval", "crnn", "--data", str(tmp_path / "nope"), "--checkpoint", str(tmp_path / "bad.pth")]) == 2


def test_bad_numbers_and_flags_that_do_not_apply_are_refused(word_folder, crnn_seeded_ckpt, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "crnn", "--data", str(word_folder), "--batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt), "--flip"]) == 2
    assert "--flip" in capsys.readouterr().err


def test_eval_limit_spreads_over_the_set(word_folder, crnn_seeded_ckpt, tmp_path):
    p = tmp_path / "e.json"
    assert main(["eval", "crnn", "--data", str(word_folder), "--checkpoint", str(crnn_seeded_ckpt), "--limit", "3",
                 "--workers", "0", "--json", str(p)]) == 0
    rep = json.loads(p.read_text())
    # 9 entries, 3 spread evenly: indices 0, 4, 8; entry 8 is '!!', emptied by normalisation and dropped
    assert [x["key"] for x in rep["predictions"]] == ["img/0.png", "img/4.png"] and rep["dropped"] == 1


def test_slim_accepts_meijieru_files_and_refuses_other_models(crnn_seeded_ckpt, tmp_path, capsys):
    assert main(["slim", str(crnn_seeded_ckpt), "--out", str(tmp_path / "s.pt")]) == 0
    rec = deployzoo.load("crnn", checkpoint=tmp_path / "s.pt")
    assert rec(word_image("abc")).text == deployzoo.load("crnn", checkpoint=crnn_seeded_ckpt)(word_image("abc")).text
    import torch

    torch.save({"state_dict": {"head.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    assert main(["slim", str(tmp_path / "other.pth"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "not a checkpoint of this model" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_eval_lmdb_with_decoding_workers(word_folder, crnn_seeded_ckpt, tmp_path):
    """LMDB environments must survive fork: workers open their own (regression: 'already open in this process')."""
    convert_word_set(word_folder, tmp_path / "db")
    res = []
    for w in ("0", "2", "2"):  # twice with workers: the parent's environment is open before the second fork
        p = tmp_path / f"{w}.json"
        assert main(["eval", "crnn", "--data", str(tmp_path / "db"), "--checkpoint", str(crnn_seeded_ckpt),
                     "--workers", w, "--json", str(p)]) == 0
        res.append([(x["key"], x["pred"]) for x in json.loads(p.read_text())["predictions"]])
    assert res[0] == res[1] == res[2] and len(res[0]) == 6
