"""The ``--boxes`` CSV: columns, paths relative to the CSV, bad rows named, unused rows."""

import pytest

from bregflax.inference.boxes import read_boxes


def test_read_boxes(tmp_path, monkeypatch):
    (tmp_path / "meta").mkdir()
    monkeypatch.chdir(tmp_path / "meta")  # paths are the CSV's, not the current folder's
    path = tmp_path / "boxes.csv"
    path.write_text(
        "path,x,y,width,height,frame\na.png,1,2,3,4,\nv.mp4,5,6,7.5,8,12\nv.mp4,0,0,9,9,12\n"
    )
    boxes = read_boxes(path)
    assert boxes == {
        (str(tmp_path / "a.png"), None): [(1, 2, 3, 4)],
        (str(tmp_path / "v.mp4"), 12): [(5, 6, 7.5, 8), (0, 0, 9, 9)],
    }
    assert boxes.lines == {
        (str(tmp_path / "a.png"), None): [2],
        (str(tmp_path / "v.mp4"), 12): [3, 4],
    }
    path.write_bytes("\ufeff Path , X,y,width,height\nsub/../a.png,1,2,3,4\n".encode())
    assert read_boxes(path) == {(str(tmp_path / "a.png"), None): [(1, 2, 3, 4)]}
    for text, message in [
        ("file,x\n", "no column path, y, width, height: --boxes needs columns"),
        ("", "found an empty file"),
        ("path,x,y,width,height\na.png,1,2,3,4\na.png,1,two,3,4\n", "boxes.csv:3: y 'two' is"),
        ("path,x,y,width,height\na.png,1,2\n", "boxes.csv:2: no value for width, height"),
        ("path,x,y,width,height,frame\na.png,1,2,3,4,-1\n", "frame '-1' is not a whole"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_boxes(path)
    path.write_bytes(b"path,x,y,width,height\n\xff\xfe,1,2,3,4\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_boxes(path)
    with pytest.raises(ValueError, match="is a folder"):
        read_boxes(tmp_path)


def test_unmatched_boxes_say_why(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("path,x,y,width,height,frame\nv.avi,1,1,5,5,3\ngone.png,1,1,5,5,\n")
    boxes = read_boxes(path)
    assert boxes.lookup(str(tmp_path / "v.avi"), 0) is None
    assert boxes.unmatched() == ["b.csv:2 (v.avi, frame 3 was not read)", "b.csv:3 (gone.png)"]
