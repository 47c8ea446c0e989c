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


@pytest.mark.parametrize("raw", ["512", "512 px", "512px", "512x512", "512 × 512", "512X512",
                                 "512²", "512.0", " 512 "])
def test_resolution_as_papers_print_it(tmp_path, raw):
    path = _csv(tmp_path, f'a,,,dev,,,,"{raw}",1.0,,src\n')
    assert read_records(path)[0].resolution == 512


@pytest.mark.parametrize("raw", ["512x1024", "512x", "8", "5000", "0", "-224", "224.5", "1e3",
                                 "nan", "abc"])
def test_a_resolution_that_is_not_one_square_side_is_refused(tmp_path, raw):
    path = _csv(tmp_path, f'a,,,dev,,,,"{raw}",1.0,,src\n')
    with pytest.raises(RecordError) as e:
        read_records(path)
    assert str(e.value) == (f"{path}: row 2, column 'resolution': {raw!r}: allowed one side in "
                            "pixels, 16..4096 (e.g. 512, '512 px' or '512x512'; the models here "
                            "take square inputs)")


def test_a_quoted_field_spanning_lines_keeps_its_break_and_rows_keep_their_lines(tmp_path):
    # a source note over two lines (Excel writes a cell with Alt+Enter this way), then a bad row:
    # the note keeps its line break, the bad row is named by the line it begins on (line 4)
    path = _csv(tmp_path, 'a,,,dev,,,,,1.0,,"Table 2\nfootnote b"\n'
                          "b,,,dev,,,,,abc,,src\n")
    with pytest.raises(RecordError) as e:
        read_records(path)
    assert "row 4" in str(e.value) and "column 'latency_ms'" in str(e.value)
    path = _csv(tmp_path, 'a,,,dev,,,,,1.0,,"Table 2\nfootnote b"\n\nb,,,dev,,,,,2.0,,src\n')
    recs = read_records(path)
    assert recs[0].source == "Table 2\nfootnote b" and [r.row for r in recs] == [2, 5]
    out = tmp_path / "out.csv"
    write_records(recs, str(out))
    assert read_records(str(out))[0].source == "Table 2\nfootnote b"  # round trip


def test_a_records_path_that_is_not_a_file_says_what_it_is(tmp_path):
    with pytest.raises(RecordError) as e:
        read_records(str(tmp_path))
    assert str(e.value) == (f"records file (CSV or JSON) {tmp_path}: is a directory; expected "
                            "a file")
    with pytest.raises(RecordError) as e:
        read_records("/dev/null")
    assert str(e.value) == ("records file (CSV or JSON) /dev/null: is not a regular file (a "
                            "device, a socket ...); expected a file")


def test_header_and_file_errors(tmp_path):
    with pytest.raises(RecordError, match="latency_ms"):
        read_records(_csv(tmp_path, "a,dev\n", header="model,device\n"))
    with pytest.raises(RecordError, match="more fields"):
        read_records(_csv(tmp_path, "a,,,dev,,,,,1.0,,src,EXTRA\n"))
    with pytest.raises(NotFoundError, match=r"^records file \(CSV or JSON\) \S+nope.csv: no such file$"):
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


def test_published_table_is_one_row_per_featurisable_model():
    """The arrays the few-shot bench and tests use: a model measured twice (MobileNetV2x1.0 on
    the iPhone 12 and 12 Pro: 1.7 and 1.73 ms) is one row at the mean; a row without a
    latency (Swin-T) or without features (EdgeViT: no timm model) is left out; each row keeps
    its family for the held-out folds."""
    from latency_models.features import N_FEATURES
    from latency_models.published import published_table

    t12 = published_table("iPhone 12")
    assert t12.names.count("MobileNetV2x1.0") == 1 and len(set(t12.names)) == len(t12.names)
    assert t12.latency_ms[t12.names.index("MobileNetV2x1.0")] == pytest.approx((1.7 + 1.73) / 2)
    assert t12.features.shape == (len(t12.names), N_FEATURES) == (len(t12.latency_ms),
                                                                  N_FEATURES)
    assert t12.families[t12.names.index("FastViT-T8")] == t12.families[
        t12.names.index("FastViT-SA36")] != t12.families[t12.names.index("MobileOne-S0")]
    t14 = published_table("iPhone 14 (iOS 16)", "Table 2")
    assert "SwiftFormer-L3" in t14.names and "DeiT-S" in t14.names
    assert "Swin-T" not in t14.names and "EdgeViT-XS" not in t14.names
    assert len(t14.names) == 21


# -- calibration input as users have it (issue 14) and bad input (issue 18) ------------------
def _user_csv(tmp_path, text, name="my.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("header", ["Model,Latency (ms)", "model,latency [ms]", "MODEL,Latency",
                                    " model , latency ms "])
def test_a_latency_column_headed_as_papers_do(tmp_path, header):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, f"{header}\nXS,0.7\nS,0.8\n")
    got = load_user_records(path, device="d")
    assert [(r.model, r.latency_ms) for r in got.records] == [("XS", 0.7), ("S", 0.8)]


def test_two_headers_naming_the_latency_are_refused(tmp_path):
    path = _user_csv(tmp_path, "model,Latency (ms),latency_ms\nXS,0.7,0.8\n")
    with pytest.raises(RecordError) as e:
        read_records(path)
    assert str(e.value) == f"{path}: header: column(s) ['latency_ms'] appear more than once"
    path = _user_csv(tmp_path, "model,latency (us)\nXS,700\n")   # not milliseconds: not guessed
    with pytest.raises(RecordError, match=r"lacks required column\(s\) \['device', 'latency_ms'\]"):
        read_records(path)


def test_model_and_latency_columns_are_enough(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,0.95 ms\nSwiftFormer-L1,1.2\n"
                               "MobileNet-v2x1.0,800 us\nL3,\n")
    got = load_user_records(path, device="my-phone")
    assert [r.model for r in got.records] == ["XS", "SwiftFormer-L1", "MobileNet-v2x1.0"]
    assert [r.latency_ms for r in got.records] == [0.95, 1.2, 0.8]
    assert {r.device for r in got.records} == {"my-phone"}
    assert got.records[1].arch_spec().widths == (48, 96, 192, 384)   # display name -> L1
    assert got.records[2].timm_name == "mobilenetv2_100"
    assert got.skipped == [f"{path}: row 5 ('L3'): blank latency_ms (not measured): skipped"]


def test_a_not_measured_mark_skips_its_row_like_a_blank(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,0.7\nS,-\nL1,N/A\nL3,\u2014\n"
                               "ResNet-50,1.1\n")
    got = load_user_records(path, device="d")
    assert [r.model for r in got.records] == ["XS", "ResNet-50"]
    assert got.skipped == [f"{path}: row 3 ('S'): latency_ms '-' (not measured): skipped",
                           f"{path}: row 4 ('L1'): latency_ms 'N/A' (not measured): skipped",
                           f"{path}: row 5 ('L3'): latency_ms '\u2014' (not measured): skipped"]
    path = _user_csv(tmp_path, "model,latency_ms\nXS,0.7\nS,0.8*\n")   # a footnote: not guessed
    with pytest.raises(RecordError, match=r"row 3, column 'latency_ms': '0.8\*' is not a number"):
        load_user_records(path, device="d")


def test_semicolon_separator_and_decimal_comma(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "Model;Latency_ms\nXS;0,95 ms\nS;1,1\n")
    got = load_user_records(path, device="d")
    assert [r.latency_ms for r in got.records] == [0.95, 1.1]


def test_unknown_model_is_named_with_the_accepted_forms(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,1.0\nmy-secret-net,2.0\n")
    with pytest.raises(RecordError) as e:
        load_user_records(path, device="d")
    assert str(e.value) == (
        f"{path}: row 3, column 'model': unknown model 'my-secret-net': expected a preset "
        "(XS, S, L1, L3), a spec JSON file, a .mlpackage path, a published model name (e.g. "
        "'MobileNet-v2x1.0', 'MobileNet-v3-Large x0.75') or a timm model name")


# How papers write timm models (their tables, not ours): each must resolve to this one model.
PAPER_SPELLINGS = {
    "MobileViTV2-0.5": "mobilevitv2_050", "MobileViTV2-1.0": "mobilevitv2_100",
    "ConvNeXt-T": "convnext_tiny", "ConvNeXt-B": "convnext_base",
    "DeiT-Ti": "deit_tiny_patch16_224", "DeiT-S": "deit_small_patch16_224",
    "EfficientFormerV2-S0": "efficientformerv2_s0", "EfficientFormer-L3": "efficientformer_l3",
    "MobileOne-S0": "mobileone_s0", "FastViT-SA12": "fastvit_sa12", "RepViT-M0.9": "repvit_m0_9",
    "RepViT-M2.3": "repvit_m2_3", "MobileNetV2 1.4": "mobilenetv2_140",
    "MobileNet-v2x1.0": "mobilenetv2_100", "MobileNetV3-Large 0.75": "mobilenetv3_large_075",
    "EdgeNeXt-XS": "edgenext_x_small", "EdgeNeXt-S": "edgenext_small",
    "EdgeNeXt-XXS": "edgenext_xx_small", "PoolFormer-S36": "poolformer_s36",
    "LeViT-128S": "levit_128s", "ResNet-50": "resnet50", "EfficientNet-B3": "efficientnet_b3",
    "Swin-T": "swin_tiny_patch4_window7_224", "PVTv2-B0": "pvt_v2_b0",
    "MobileViT-XXS": "mobilevit_xxs", "GhostNet 1.0x": "ghostnet_100",
    "TinyViT-5M": "tiny_vit_5m_224", "ResNeXt50-32x4d": "resnext50_32x4d",
    "MobileNet-v3-Large": "mobilenetv3_large_100", "GhostNet": "ghostnet_100"}


@pytest.mark.parametrize("display", sorted(PAPER_SPELLINGS))
def test_a_paper_spelling_means_one_timm_model(display):
    from latency_models.timm_models import timm_names_like
    assert timm_names_like(display) == [PAPER_SPELLINGS[display]]


def test_every_timm_name_finds_itself_and_models_timm_lacks_find_nothing():
    import timm

    from latency_models.timm_models import timm_names_like
    assert [n for n in timm.list_models() if n not in timm_names_like(n)] == []
    assert [n for n in ("RegNetY-600MF", "MobileFormer-294M", "EdgeViT-XXS", "LeViT-128S-x")
            if timm_names_like(n)] == []


def test_paper_names_resolve_or_are_refused_naming_the_choices(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,1.0\nMobileViTV2-0.5,2.0\n")
    got = load_user_records(path, device="d")
    assert got.records[1].timm_name == "mobilevitv2_050"
    assert got.read_as == [f"{path}: row 3, column 'model': 'MobileViTV2-0.5' read as the timm "
                           "model 'mobilevitv2_050'"]
    path = _user_csv(tmp_path, "model,latency_ms\nXS,1.0\nViT-S,2.0\n")
    with pytest.raises(RecordError) as e:   # patch 8, 16 or 32: the latency differs 10x
        load_user_records(path, device="d")
    assert str(e.value) == (
        f"{path}: row 3, column 'model': model 'ViT-S' can mean any of the timm models "
        "vit_small_patch16_224, vit_small_patch32_224, vit_small_patch8_224: write the one you "
        "mean")
    path = _user_csv(tmp_path, "model,latency_ms\nXS,1.0\nMobileViTV2-0.55,2.0\n")
    with pytest.raises(RecordError) as e:
        load_user_records(path, device="d")
    assert str(e.value).endswith("or a timm model name; timm names like it: mobilevitv2_075, "
                                 "mobilevitv2_050, mobilevitv2_200")


@pytest.mark.parametrize("name, model, side", [
    ("EfficientFormer-L1 (512)", "efficientformer_l1", 512),
    ("EfficientFormer-L3 (backbone @512)", "efficientformer_l3", 512),
    ("ConvNeXt-T @ 384 px", "convnext_tiny", 384),
    ("deit_small_patch16_224 384x384", "deit_small_patch16_224", 384),
    ("MobileViTV2-0.5-256px", "mobilevitv2_050", 256),
    ("DeiT-S 384²", "deit_small_patch16_224", 384),
])
def test_a_size_at_the_end_of_a_model_name_is_its_resolution(tmp_path, name, model, side):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, f"model,latency_ms\n{name},2.0\nResNet-50,3.0\n")
    got = load_user_records(path, device="d")
    assert [(r.timm_name, r.resolution) for r in got.records] == [(model, side),
                                                                    ("resnet50", None)]
    assert got.read_as == [f"{path}: row 2, column 'model': {name!r} read as the timm model "
                           f"{model!r} at {side} px"]   # ResNet-50: a published display name


def test_a_preset_with_a_size_and_sizes_that_disagree(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS @ 256,1.0\n")
    rec = load_user_records(path, device="d").records[0]
    assert rec.arch_spec().resolution == 256 and rec.arch_spec().depths == (3, 3, 6, 4)
    path = _user_csv(tmp_path, "model,resolution,latency_ms\nConvNeXt-T (384),224,1.0\n")
    with pytest.raises(RecordError) as e:
        load_user_records(path, device="d")
    assert str(e.value) == (f"{path}: row 2, column 'model': 'ConvNeXt-T (384)' says 384 px, "
                            "column 'resolution' says 224: give one")
    path = _user_csv(tmp_path, "model,latency_ms\nConvNeXt-T (384x512),1.0\n")
    with pytest.raises(RecordError) as e:
        load_user_records(path, device="d")
    assert str(e.value).startswith(f"{path}: row 2, column 'model': '384x512': allowed one side")


def test_spec_files_and_packages_resolve_next_to_the_csv(tmp_path):
    from latency_models.userrecords import load_user_records

    (tmp_path / "cand.json").write_text(json.dumps(
        {"depths": [1, 1, 2, 1], "widths": [16, 24, 32, 48], "mlp_ratios": [2, 2, 3, 4],
         "attn_blocks": [0, 1, 1, 1], "resolution": 128}))
    (tmp_path / "m.mlpackage").mkdir()
    path = _user_csv(tmp_path, "model,latency_ms\ncand.json,1.0\nm.mlpackage,2.0\n")
    got = load_user_records(path, device="d")
    assert got.records[0].arch_spec().resolution == 128
    assert got.records[1].mlpackage == str(tmp_path / "m.mlpackage")
    missing = _user_csv(tmp_path, "model,latency_ms\ngone.mlpackage,2.0\n", "b.csv")
    with pytest.raises(RecordError, match=r"row 2, column 'model': 'gone.mlpackage': no such "
                                          r"\.mlpackage"):
        load_user_records(missing, device="d")


@pytest.mark.parametrize("value", ["1e300", "0.0001", "5e9", "-2"])
def test_implausible_latency_names_the_range(tmp_path, value):
    path = _user_csv(tmp_path, f"model,latency_ms\nXS,{value}\n")
    from latency_models.userrecords import load_user_records

    with pytest.raises(RecordError) as e:
        load_user_records(path, device="d")
    assert str(e.value) == (f"{path}: row 2, column 'latency_ms': '{value}' is not a plausible "
                            "latency: must be a finite number of milliseconds in 0.01..100000")


def test_duplicates_are_averaged_or_refused(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,0.9\nS,1.2\nSwiftFormer-XS,0.95\n")
    got = load_user_records(path, device="d")
    assert [r.model for r in got.records] == ["XS", "S"]
    assert got.records[0].latency_ms == pytest.approx(0.925)
    assert got.merged == [f"{path}: rows 2, 4: 'XS' measured 2 times (0.9, 0.95 ms): averaged "
                          "to 0.925 ms"]
    bad = _user_csv(tmp_path, "model,latency_ms\nXS,0.9\nS,1.2\nXS,5.0\n", "bad.csv")
    with pytest.raises(RecordError) as e:
        load_user_records(bad, device="d")
    assert str(e.value) == (f"{bad}: rows 2, 4, column 'latency_ms': 'XS' measured 2 times on "
                            "'d' disagrees (0.9, 5 ms, more than 15% of their mean apart): keep "
                            "the right row or re-measure")
    # The same row twice is one measurement, not two models.
    twice = load_user_records(_user_csv(tmp_path, "model,latency_ms\nXS,0.9\nXS,0.9\n", "t.csv"),
                              device="d")
    assert len(twice.records) == 1


def test_device_column_still_required_without_a_device(tmp_path):
    from latency_models.userrecords import load_user_records

    path = _user_csv(tmp_path, "model,latency_ms\nXS,1.0\n")
    with pytest.raises(RecordError, match=r"header lacks required column\(s\) \['device'\]"):
        load_user_records(path)


def test_non_utf8_file_is_named(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("model,device,latency_ms\nXS,t\xe9l\xe9phone,1.0\n".encode("latin-1"))
    with pytest.raises(RecordError) as e:
        read_records(str(p))
    assert str(e.value) == (f"records file (CSV or JSON) {p}: not UTF-8 text (byte 28); save it "
                            "as UTF-8")


@pytest.mark.parametrize("kw, family", [
    ({"timm_name": "deit_small_patch16_224"}, "timm:deit"),
    ({"timm_name": "deit_tiny_patch16_224"}, "timm:deit"),
    ({"timm_name": "resnet50"}, "timm:resnet"),
    ({"timm_name": "mobilenetv2_100"}, "timm:mobilenetv2"),
    ({"timm_name": "mobilenetv3_large_100"}, "timm:mobilenetv3"),
    ({"timm_name": "efficientformerv2_s0"}, "timm:efficientformerv2"),
    ({"timm_name": "resnet18d"}, "timm:resnet18d"),
])
def test_family_is_the_architecture_without_its_size(kw, family):
    assert Record("m", "d", 1.0, **kw).family() == family


def test_swiftformer_members_and_unnamed_rows_are_families_of_their_own():
    """A search predicts new members of the SwiftFormer space: each measured member is its own
    held-out fold, whether named by preset, timm name or spec; other rows by identity."""
    xs, l3 = Record("XS", "d", 1.0), Record("m", "d", 1.0, timm_name="swiftformer_l3")
    assert xs.family() == xs.identity() and l3.family() == l3.identity()
    assert xs.family() != l3.family() and xs.family().startswith("spec:")
    other = Record("EdgeViT-XS", "d", 1.0)
    assert other.family() == "model:EdgeViT-XS"
