"""Measurement record format: strict importers with errors naming file, row and column."""
import json

import pytest

from latency_models.records import Record, RecordError, read_records, write_records
from search_space.errors import NotFoundError

HEADER = "model,spec,timm_name,device,os,runtime,compute_unit,resolution,latency_ms,std_ms,source\n"


def _csv(tmp_path, body, header=HEADER):
    p = tmp_path / "r.csv"
    p.write_text(header + body)
    return str(p)


def test_good_csv_and_round_trip(tmp_path):
    spec = json.dumps({"depths": [1, 1, 2, 1], "widths": [16, 24, 32, 48],
                       "mlp_ratios": [2, 2, 3, 4], "attn_blocks": [0, 1, 1, 1]}).replace('"', '""')
    path = _csv(tmp_path, f'a,"{spec}",,iPhone 15,iOS 17,CoreML,ALL,160,1.25,0.05,me\n'
                          "b,,mobilenetv2_100,iPhone 15,,,,,0.8,,paper\n"
                          "XS,,,iPhone 15,,,,,0.7,,paper\n")
    recs = read_records(path)
    assert [r.model for r in recs] == ["a", "b", "XS"]
    assert recs[0].resolution == 160 and recs[0].latency_ms == 1.25 and recs[0].std_ms == 0.05
    assert recs[0].arch_spec().resolution == 160 and recs[0].arch_spec().depths == (1, 1, 2, 1)
    assert recs[1].arch_spec() is None and recs[1].timm_name == "mobilenetv2_100"
    assert recs[2].arch_spec().widths == (48, 56, 112, 220)       # preset by model name
    out = tmp_path / "out.csv"
    write_records(recs, str(out))
    again = read_records(str(out))
    assert [r.to_row() for r in again] == [r.to_row() for r in recs]


@pytest.mark.parametrize("row,col", [
    ("a,,,dev,,,,,abc,,src\n", "latency_ms"),        # not a number
    ("a,,,dev,,,,,-1,,src\n", "latency_ms"),         # not positive
    ("a,,,dev,,,,,nan,,src\n", "latency_ms"),
    ("a,,,,,,,,1.0,,src\n", "device"),               # missing required
    (",,,dev,,,,,1.0,,src\n", "model"),
    ("a,,,dev,,,,224.5,1.0,,src\n", "resolution"),   # not an integer
    ("a,,,dev,,,,,1.0,-0.1,src\n", "std_ms"),
    ('a,"{""depths"": [1]}",,dev,,,,,1.0,,src\n', "spec"),   # invalid spec
])
def test_malformed_rows_name_row_and_column(tmp_path, row, col):
    path = _csv(tmp_path, "ok,,,dev,,,,,1.0,,src\n" + row)
    with pytest.raises(RecordError) as e:
        read_records(path)
    msg = str(e.value)
    assert "row 3" in msg and f"column '{col}'" in msg and path in msg
    assert "\n" not in msg


def test_header_and_file_errors(tmp_path):
    with pytest.raises(RecordError, match="latency_ms"):
        read_records(_csv(tmp_path, "a,dev\n", header="model,device\n"))
    with pytest.raises(RecordError, match="more fields"):
        read_records(_csv(tmp_path, "a,,,dev,,,,,1.0,,src,EXTRA\n"))
    with pytest.raises(NotFoundError, match="nope.csv: no such records file"):
        read_records(str(tmp_path / "nope.csv"))


def test_json_records(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"records": [
        {"model": "XS", "device": "d", "latency_ms": 0.7},
        {"model": "y", "device": "d", "latency_ms": 1.0, "spec": {
            "depths": [1, 1, 1, 1], "widths": [16, 16, 16, 16], "mlp_ratios": [1, 1, 1, 1],
            "attn_blocks": [0, 0, 0, 1]}}]}))
    recs = read_records(str(p))
    assert recs[1].arch_spec().widths == (16, 16, 16, 16)
    p.write_text(json.dumps([{"model": "XS", "device": "d", "latency_ms": "fast"}]))
    with pytest.raises(RecordError, match=r"record 1, column 'latency_ms'"):
        read_records(str(p))
    p.write_text("[1, 2")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_records(str(p))


def test_shipped_published_table_parses():
    from latency_models.published import published_records

    recs = published_records()
    names = {r.model for r in recs}
    assert {"SwiftFormer-XS", "SwiftFormer-S", "SwiftFormer-L1", "SwiftFormer-L3"} <= names
    assert all(r.device.startswith("iPhone 14") for r in recs) and len(recs) >= 20
    assert isinstance(recs[0], Record)
