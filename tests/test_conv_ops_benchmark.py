"""benchmarks/conv_ops.py finds every convolution of a network and totals what it times."""

import json

from benchmarks import conv_ops


def test_model_convs_counts_every_convolution_of_bregnet39():
    convs = conv_ops.model_convs("BReGNet39", batch=2)
    # 2 stem convs, 2 per block over 3 x 6 blocks, a 1x1 projection entering stages 2 and 3.
    assert sum(convs.values()) == 2 + 2 * 18 + 2
    first = [k for k in convs if not k.needs_dx]
    assert len(first) == 1 and first[0].shape == (2, 48, 48, 1)  # only the image has no dx
    strided = [k.kernel for k, n in convs.items() for _ in range(n) if k.stride == 2]
    assert sorted(strided) == [(1, 1), (1, 1), (3, 3), (3, 3)]
    assert convs[(2, 48, 48, 48), 48, (3, 3), 1, True] == 1 + 12  # stem_conv1 and stage 1


def test_conv_ops_smoke_totals_are_the_weighted_sums(tmp_path, capsys):
    out = tmp_path / "r.json"
    (result,) = conv_ops.main(
        ["--models", "BReGNetTiny", "--batch", "2", "--repeats", "1", "--no-torch"]
        + ["--json", str(out)]
    )
    rows = result["rows"]
    assert all(("dx" in r["ms"]) == r["conv"]["needs_dx"] for r in rows)
    want = sum(r["count"] * sum(r["ms"].values()) for r in rows)
    assert abs(result["totals"]["jax_train"] - want) < 1e-9 * want
    assert "torch_train" not in result["totals"]
    assert json.loads(out.read_text())[0]["model"] == "BReGNetTiny"
    assert "convolutions per step" in capsys.readouterr().out
