"""`tfkd.app.runs`: every run gets its own folder; nothing is silently
replaced."""

import os

import pytest

from tfkd.app import runs


def test_new_folders_are_numbered_and_marked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runs.prepare_run_dir(None, kind="demo")
    second = runs.prepare_run_dir(None, kind="demo")
    assert runs.display_path(first) == os.path.join("tfkd_runs", "demo-1")
    assert runs.display_path(second) == os.path.join("tfkd_runs", "demo-2")
    assert runs.is_run_dir(first) and runs.run_kind(first) == "demo"
    assert runs.prepare_run_dir(None, kind="tune").endswith("tune-1")


def test_missing_or_empty_folders_are_used(tmp_path):
    out = tmp_path / "a" / "b"
    assert runs.prepare_run_dir(str(out), kind="tune") == str(out)
    assert runs.run_kind(out) == "tune"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runs.prepare_run_dir(str(empty), kind="demo") == str(empty)


def test_non_empty_folders_are_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    runs.prepare_run_dir(str(out), kind="demo")
    (out / "results.json").write_text("{}")
    (out / "teacher.keras").write_text("x")
    (out / "plots").mkdir()
    with pytest.raises(ValueError, match=r"is not empty \(plots, "
                                         r"results.json, teacher.keras\)"
                                         r".*Pass --overwrite"):
        runs.prepare_run_dir(str(out), kind="demo")
    runs.prepare_run_dir(str(out), kind="demo", overwrite=True,
                         keep=("teacher.keras",))
    assert sorted(os.listdir(out)) == [runs.MARKER, "teacher.keras"]


def test_overwrite_never_deletes_files_tfkd_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match=r"holds files a tfkd run did not "
                                         r"write \(thesis.tex"):
        runs.prepare_run_dir(str(mine), kind="demo", overwrite=True)
    assert (mine / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        runs.prepare_run_dir(str(a_file), kind="demo", option="--out")


def test_display_path_and_next_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs.display_path(tmp_path / "x" / "y") == os.path.join("x", "y")
    assert runs.display_path(tmp_path) == "."
    outside = os.path.dirname(str(tmp_path))
    assert runs.display_path(outside) == outside
    assert runs.shell_quote(tmp_path / "my run") == "'my run'"
    assert runs.next_steps(["tfkd report a", "tfkd export b"]) == (
        "Next:\n  tfkd report a\n  tfkd export b")
    with pytest.raises(ValueError, match="kind="):
        runs.prepare_run_dir(None, kind="")


@pytest.mark.parametrize("kind,ours", [
    ("demo", ["results.json", "student_lp_seed0.keras", "plots"]),
    ("tune", ["search", "trials.json", "best_student.keras"]),
    ("transfer", ["runs.csv", "kd-0.json", "transfer.md"]),
])
def test_overwrite_in_a_marked_folder_keeps_the_users_files(tmp_path, kind,
                                                            ours):
    """A run folder the user added their own files to is refused whole by
    --overwrite: nothing is deleted, the user's files are named."""
    out = tmp_path / "run"
    runs.prepare_run_dir(str(out), kind=kind)
    for name in ours:
        if name == "runs.csv":
            (out / name).write_text("run_id,json_file\nkd-0,kd-0.json\n")
        elif "." in name:
            (out / name).write_text("x")
        else:
            (out / name).mkdir()
    (out / "notes.json").write_text("precious")
    with pytest.raises(ValueError, match=r"holds files a tfkd run did not "
                                         r"write \(notes.json\), so "
                                         r"--overwrite will not delete "
                                         r"anything"):
        runs.prepare_run_dir(str(out), kind=kind, overwrite=True)
    assert sorted(os.listdir(out)) == sorted(ours + ["notes.json",
                                                     runs.MARKER])
    # Without the user's file, the run's own files are replaced.
    os.remove(out / "notes.json")
    runs.prepare_run_dir(str(out), kind=kind, overwrite=True)
    assert os.listdir(out) == [runs.MARKER]


def test_a_file_in_the_way_of_the_run_folder_is_named(tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / runs.DEFAULT_ROOT).write_text("not a folder")
    with pytest.raises(ValueError, match=r"Runs go into the folder "
                                         r"'tfkd_runs', but a file of that "
                                         r"name is in the way.*choose the "
                                         r"run's folder with --out DIR"):
        runs.prepare_run_dir(None, kind="demo")
    with pytest.raises(ValueError, match=r"Cannot make the folder --out "
                                         r"'tfkd_runs/demo-1': a file is in "
                                         r"the way.*choose another --out"):
        runs.prepare_run_dir("tfkd_runs/demo-1", kind="demo")
    assert (tmp_path / runs.DEFAULT_ROOT).read_text() == "not a folder"


def test_demo_export_measures_the_accuracy_tables_images(tmp_path, capsys):
    """The demo's export verifies on the whole test split (the images of
    its accuracy table), so the Keras accuracy it prints is the table's
    number for that student, not a second one on a 256-image subset."""
    import json

    import tfkd
    from tfkd.app import demo
    from tfkd.app.experiment import test_accuracy

    data = tfkd.data.load_digits(image_size=16, seed=0)
    student = tfkd.models.digits_student(data.num_classes, data.input_shape)
    teacher = tfkd.models.digits_teacher(data.num_classes, data.input_shape)
    demo._export(student, teacher, data, str(tmp_path))
    report = json.loads((tmp_path / "student.json").read_text())
    assert report["num_verified"] == 360
    assert report["keras_accuracy"] == pytest.approx(
        test_accuracy(student, data.test))
    assert "the 360 held-out test images of the table above" in \
        capsys.readouterr().out
