"""bregflax.paper.published: the paper's figures, checked against the paper's text, and every one of
them shown, in its own row and column, by the tables ``bregflax reproduce`` writes."""

import re
from pathlib import Path

import pytest

from bregflax.evaluation import report
from bregflax.paper import cells as cells_lib
from bregflax.paper import published as paper
from bregflax.paper import tables

PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "paper" / "bregnet_fg2019.txt"


# A handful of cells typed in from the paper (FG 2019), independently of the transcription.
@pytest.mark.parametrize(
    "got, want",
    [
        (paper.TABLE_I[("fer2013", "h3", "weighted")], 69.49),  # Table I's best
        (paper.TABLE_I[("affectnet", "h2", "weighted")], 64.02),
        (paper.TABLE_II[("fer2013", "resnet", "regular")], 66.48),
        (paper.TABLE_II[("affectnet", "resnet", "regular")], 58.20),
        (paper.TABLE_III[("affectnet", "ppv")], (0.62, 0.71)),
        (paper.TABLE_IV[("fer2013", "kappa")], (0.61, 0.62)),
        (paper.TABLE_V[("aff_wild", "resnet", "arousal")], 0.3309),
        (paper.TABLE_V[("affectnet_va", "bregnet", "valence")], 0.2597),
        (paper.TABLE_VI[("aff_wild", "ccc", "arousal")], 0.34),
        (paper.TABLE_VII[("affectnet_va", "sagr", "valence")], 0.66),
        (paper.TIMING["bregnet"]["seconds_per_epoch"], 750.21),
        (paper.TIMING["resnet"]["params"], 7.2e6),
    ],
)
def test_cells_typed_from_the_paper(got, want):
    assert got == want


def test_table_ii_repeats_table_i_for_bregnet():
    for (dataset, arch, loss), value in paper.TABLE_II.items():
        if arch == "bregnet":
            assert paper.TABLE_I[(dataset, "h3", loss)] == value
    assert paper.accuracy("fer2013", "bregnet", "h3", "weighted") == 69.49
    assert paper.accuracy("fer2013", "resnet", "identity", "weighted") is None


def _rows_of(text: str, name: str) -> list[list[float]]:
    """The decimal numbers of each data row of the paper's table ``name`` in its text."""
    start = text.index(f"\nTABLE {name}\n")
    end = text.find("\nTABLE ", start + 1)
    block = text[start : end if end > 0 else None]
    rows = []
    for line in block.splitlines():
        if re.match(r"(AffectNet|FER2013|Affect-in-Wild)\b", line):
            rows.append([float(x) for x in re.findall(r"\d+\.\d+", line)])
    return rows


def test_every_table_matches_the_papers_text():
    if not PAPER_TEXT.exists():
        pytest.skip(f"the paper's text is not at {PAPER_TEXT}")
    text = PAPER_TEXT.read_text()
    cat, dim = ("affectnet", "fer2013"), ("affectnet_va", "aff_wild")
    maps = [(m, loss) for m in ("h1", "h2", "h3") for loss in ("regular", "weighted")]
    for d, row in zip(cat, _rows_of(text, "I"), strict=True):
        assert row == [paper.TABLE_I[(d, m, loss)] for m, loss in maps]
    arms = [("resnet", "regular"), ("bregnet", "regular"), ("bregnet", "weighted")]
    for d, row in zip(cat, _rows_of(text, "II"), strict=True):
        assert row[:3] == [paper.TABLE_II[(d, *arm)] for arm in arms]
        assert paper.TABLE_II_STATE_OF_THE_ART[d].startswith(f"{row[3]}")
    metrics = ("f1", "kappa", "alpha", "mcc", "ppv")
    for name, cells in (("III", paper.TABLE_III), ("IV", paper.TABLE_IV)):
        for d, row in zip(cat, _rows_of(text, name), strict=True):
            assert row == [v for m in metrics for v in cells[(d, m)]]
    for d, row in zip(dim, _rows_of(text, "V"), strict=True):
        ours = [
            paper.TABLE_V[(d, a, dim_)]
            for a in ("resnet", "bregnet")
            for dim_ in ("valence", "arousal")
        ]
        sota = [paper.TABLE_V_STATE_OF_THE_ART[(d, x)][0] for x in ("valence", "arousal")]
        assert row == ours + sota
    for name, cells in (("VI", paper.TABLE_VI), ("VII", paper.TABLE_VII)):
        for d, row in zip(dim, _rows_of(text, name), strict=True):
            want = [cells[(d, m, x)] for m in ("cc", "ccc", "sagr") for x in ("valence", "arousal")]
            assert row == want
    for arch, name in (("bregnet", "BReG-Net"), ("resnet", "ResNet-110")):
        t = paper.TIMING[arch]
        params, seconds = t["params"] / 1e6, t["seconds_per_epoch"]
        assert f"{name} with {params:.1f}M parameters is {seconds:.2f} seconds" in text


def test_there_are_one_hundred_cells():
    cells = list(paper.cells())
    counts = {t: sum(c.table == t for c in cells) for t in dict.fromkeys(c.table for c in cells)}
    assert counts == {
        "I": 12,
        "II": 8,
        "III": 20,
        "IV": 20,
        "V": 12,
        "VI": 12,
        "VII": 12,
        "timing": 4,
    }
    assert len({(c.table, c.key) for c in cells}) == len(cells)


# ------------------------------------------------------------------ every cell, in its place


def _cell(parsed, label: str, column: str, section: str = "") -> str:
    rows = [r for r in parsed[section] if next(iter(r.values())) == label]
    assert len(rows) == 1, (label, section)
    return rows[0][column]


D = cells_lib.DATASET_NAMES
A = cells_lib.ARCH_NAMES
ROW_LABELS = dict(report.CATEGORICAL_ROWS)


def _locate(cell: paper.Cell):
    """(table file key, section, row label, column) where ``cell`` must be shown."""
    t, k = cell.table, cell.key
    if t == "I":
        d, m, loss = k
        return "1", "", f"{m.upper()}, {loss}", f"{D[d]} paper"
    if t == "II":
        if k[1] == "state of the art":
            return "2", "", "State of the art (the paper's references)", f"{D[k[0]]} paper"
        d, arch, loss = k
        return "2", "", f"{A[arch]}, {loss}", f"{D[d]} paper"
    if t in ("III", "IV"):
        d, metric, col = k
        loss = "weighted" if t == "III" else "regular"
        section = f"{D[d]}, BReG-Net (H3), {loss} loss (Table {t})"
        return "3" if t == "III" else "4", section, ROW_LABELS[metric], f"{col.capitalize()} paper"
    if t == "V":
        if k[1] == "state of the art":
            d, _, dim = k
            return "5", "", f"{D[d]}, state of the art", f"{dim} RMSE paper"
        d, arch, dim = k
        return "5", "", f"{D[d]}, {A[arch]}", f"{dim} RMSE paper"
    if t in ("VI", "VII"):
        d, metric, dim = k
        return "6" if t == "VI" else "7", "", f"{D[d]} {metric.upper()}", f"{dim} paper"
    arch, what = k
    column = "s / epoch paper" if what == "seconds_per_epoch" else "Params paper"
    return "timing", "", f"AffectNet, {A[arch]}", column


def test_every_paper_cell_is_in_its_place_in_the_rendered_tables(tmp_path):
    rendered = {
        t: report.read_markdown_tables(tables.render(t, [], tmp_path, "cpu"))
        for t in ("1", "2", "3", "4", "5", "6", "7", "timing")
    }
    placed = 0
    for cell in paper.cells():
        table, section, label, column = _locate(cell)
        shown = _cell(rendered[table], label, column, section)
        if cell.table == "V" and cell.key[1] == "state of the art":
            shown = shown.split(" [")[0]
        assert shown == cell.text, (cell, shown)
        placed += 1
    assert placed == 100


def test_table_i_puts_69_49_in_the_weighted_row(tmp_path):
    parsed = report.read_markdown_tables(tables.render("1", [], tmp_path, "cpu"))
    assert _cell(parsed, "H3, weighted", "FER2013 paper") == "69.49"
    assert _cell(parsed, "H3, regular", "FER2013 paper") == "68.74"


def test_tables_vi_and_vii_are_split_by_model(tmp_path):
    six = report.read_markdown_tables(tables.render("6", [], tmp_path, "cpu"))[""]
    seven = report.read_markdown_tables(tables.render("7", [], tmp_path, "cpu"))[""]
    labels = [r["Dataset, metric"] for r in six]
    assert labels == [f"{d} {m}" for d in ("AffectNet", "Aff-Wild") for m in ("CC", "CCC", "SAGR")]
    assert [r["Dataset, metric"] for r in seven] == labels
    # the rows differ where BReG-Net and ResNet-110 differ: AffectNet SAGR valence 0.73 / 0.66
    assert six[2]["valence paper"] == "0.73" and seven[2]["valence paper"] == "0.66"
