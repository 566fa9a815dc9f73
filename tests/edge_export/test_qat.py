"""``nptface export --qat``: one fake-quant fine-tune builds 8-bit-activation ONNX and TFLite variants that the gate judges."""

from __future__ import annotations

import numpy as np
import pytest

from nptface.edge_export import tflite_export
from nptface.edge_export.onnx_export import Int8Recipe
from nptface.edge_export.pipeline import ExportOptions, export_bundle
from nptface.edge_export.qat import QatSettings

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torchao")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "qat steps"),
        ("steps", -5, "qat steps"),
        ("steps", 2.5, "qat steps"),
        ("lr", 0.0, "qat lr"),
        ("synthetic_domain", "moon", "qat synthetic_domain: expected one of .*wild"),
    ],
)
def test_settings_refuse_a_bad_value_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        QatSettings(**{field: value})


@pytest.mark.parametrize("steps", ["0", "-3", "many"])
def test_cli_refuses_bad_qat_steps_with_a_clear_error(steps, capsys):
    from nptface import cli

    with pytest.raises(SystemExit):
        cli.main(["export", "--run", "unused", "--qat", "--qat-steps", steps])
    assert f"--qat-steps: expected a positive whole number, got '{steps}'" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--qat-steps", "10"], ["--qat-images", "calibration"]])
def test_cli_refuses_qat_options_without_qat(option):
    from nptface import cli

    with pytest.raises(SystemExit, match="add --qat"):
        cli.main(["export", "--run", "unused", *option])


@pytest.mark.parametrize(
    ("arguments", "domain"),
    [
        ([], "wild"),
        (["--domain", "studio"], "studio"),
        (["--calibration", "faces/"], None),
        (["--calibration", "faces/", "--qat-images", "synthetic"], "wild"),
        (["--qat-images", "calibration"], None),
    ],
)
def test_qat_distils_on_fresh_synthetic_faces_when_calibration_is_synthetic(arguments, domain):
    from nptface import cli

    args = cli.build_parser().parse_args(["export", "--run", "unused", "--qat", *arguments])
    settings = cli._qat_settings(args)
    assert settings.synthetic_domain == domain
    assert ("fresh synthetic faces" in settings.describe()) == (domain is not None)


def test_qat_needs_an_int8_variant_it_builds():
    with pytest.raises(ValueError, match="qat: .*int8"):
        ExportOptions(formats=("onnx",), precisions=("fp32",), qat=QatSettings())
    with pytest.raises(ValueError, match="qat: .*onnx or tflite"):
        ExportOptions(formats=("coreml",), precisions=("int8",), qat=QatSettings())
    ExportOptions(formats=("tflite",), precisions=("int8",), qat=QatSettings())  # tflite-int8-qat alone is fine


@pytest.mark.slow
def test_learned_ranges_map_onto_every_conv_add_and_prelu_of_the_exported_file(tiny_run, tiny_sets, tmp_path):
    from nptface.core.checkpoint import load_backbone
    from nptface.core.mobilefacenet import fuse_bn
    from nptface.edge_export import onnx_export, qat

    model, _ = load_backbone(tiny_run)
    fused = fuse_bn(model)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    result = qat.fine_tune(fused, tiny_sets[1].images, QatSettings(steps=4, batch_size=8))
    assert all(torch_equal(before[k], v) for k, v in fused.state_dict().items()), "the source model is untouched"
    assert any(not torch_equal(before[k], v) for k, v in result.model.state_dict().items()), "weights moved"

    path = tmp_path / "tuned.onnx"
    onnx_export.export_fp32(result.model, path, model.config.input_size, {})
    overrides = qat.onnx_tensor_ranges(path, result.ranges)
    graph = onnx.load(str(path)).graph
    expected = {graph.input[0].name} | {n.output[0] for n in graph.node if n.op_type in ("Conv", "Add", "PRelu")}
    assert set(overrides) == expected
    for name, [entry] in overrides.items():
        assert entry["rmin"] <= 0 <= entry["rmax"] and entry["rmax"] > entry["rmin"], name

    fewer = {key: value for key, value in result.ranges.items() if key != ("Conv", 0)} | {("Conv", 999): (0.0, 1.0)}
    with pytest.raises(ValueError, match="Conv nodes"):
        qat.onnx_tensor_ranges(path, fewer)


@pytest.mark.slow
def test_fake_quantisation_mirrors_the_onnxruntime_int8_file_prelu_slopes_included(tiny_run, tiny_sets, tmp_path):
    import torch
    from onnx import numpy_helper

    from nptface.core.checkpoint import load_backbone
    from nptface.core.mobilefacenet import fuse_bn
    from nptface.core.preprocess import normalize
    from nptface.edge_export import onnx_export, qat
    from nptface.edge_export.pipeline import QAT_RECIPE
    from nptface.edge_export.runtimes import OnnxEmbedder

    evaluation, calibration = tiny_sets
    model, _ = load_backbone(tiny_run)
    result = qat.fine_tune(fuse_bn(model), calibration.images, QatSettings(steps=4, batch_size=8))
    source, path = tmp_path / "tuned.onnx", tmp_path / "int8.onnx"
    onnx_export.export_fp32(result.model, source, model.config.input_size, {})
    ranges = qat.onnx_tensor_ranges(source, result.ranges)
    onnx_export.quantize_int8(source, path, calibration.images, QAT_RECIPE, ranges)

    graph = onnx.load(str(path)).graph
    produced_by = {output: node for node in graph.node for output in node.output}
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    file_slopes = [initializers[produced_by[n.input[1]].input[0]] for n in graph.node if n.op_type == "PRelu"]
    assert file_slopes and all(s.dtype == np.int8 and s.min() >= -64 and s.max() <= 64 for s in file_slopes)
    graph_module = result.fake_quant
    slope_quantisers = [
        graph_module.get_submodule(n.args[1].target)
        for n in graph_module.graph.nodes
        if n.target == torch.ops.aten.prelu.default and n.args[1].op == "call_module"
    ]
    assert len(slope_quantisers) == len(file_slopes), "every PReLU slope is fake-quantised, as the file stores it"
    assert all((q.quant_min, q.quant_max) == (-64, 64) for q in slope_quantisers)

    reference = OnnxEmbedder(source, model.config.input_size).embed(evaluation.images)
    quantised = OnnxEmbedder(path, model.config.input_size).embed(evaluation.images)
    with torch.no_grad():
        simulated = torch.nn.functional.normalize(graph_module(normalize(evaluation.images)), dim=1).numpy()
    error_file = 1 - float(np.mean(np.sum(quantised * reference, axis=1)))
    error_simulated = 1 - float(np.mean(np.sum(simulated * reference, axis=1)))
    assert error_file > 0 and 0.8 < error_simulated / error_file < 1.25, (error_simulated, error_file)


def test_qat_draws_a_fresh_batch_every_step_when_given_a_stream(tiny_run, tiny_sets):
    from nptface.core.checkpoint import load_backbone
    from nptface.core.mobilefacenet import fuse_bn
    from nptface.edge_export import qat
    from nptface.edge_export.evalset import synthetic_stream

    model, _ = load_backbone(tiny_run)
    draw = synthetic_stream(model.config.input_size)
    asked: list[tuple[int, int]] = []

    def fresh(step: int, n: int) -> np.ndarray:
        asked.append((step, n))
        return draw(step, n)

    settings = QatSettings(steps=3, batch_size=4, cosine_decay=True)
    qat.fine_tune(fuse_bn(model), tiny_sets[1].images[:8], settings, fresh)
    assert asked == [(0, 4), (1, 4), (2, 4)]
    assert "cosine-decayed" in settings.describe()


def test_synthetic_stream_renders_identities_the_gate_and_calibration_never_use(tiny_sets):
    from nptface.edge_export.evalset import synthetic_stream

    draw = synthetic_stream(32)
    first, second = draw(0, 6), draw(1, 6)
    assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, draw(0, 6)), "a step's batch is reproducible"
    assert not np.array_equal(first, second), "each step is a new batch"
    gate_and_calibration = np.concatenate([s.images for s in tiny_sets])
    streamed = np.concatenate([first, second])
    assert not (streamed[:, None] == gate_and_calibration[None]).all(axis=(2, 3, 4)).any()


def test_the_fresh_face_stream_is_bounded_below_the_one_owner_identities():
    from nptface.edge_export.evalset import SYNTHETIC_STREAM_END, SYNTHETIC_STREAM_SIZE, synthetic_stream
    from nptface.simulation.one_owner import UNSEEN_FIRST

    assert SYNTHETIC_STREAM_END <= UNSEEN_FIRST, "QAT's fresh faces are never the benchmark's unseen owners"
    with pytest.raises(ValueError, match=r"qat steps: 12501 steps x 32 .* use at most 12500 steps"):
        QatSettings(steps=12_501, synthetic_domain="wild")
    QatSettings(steps=12_501)  # on the calibration images the count is not bounded
    with pytest.raises(ValueError, match="runs past"):
        synthetic_stream(32)(SYNTHETIC_STREAM_SIZE // 4, 4)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def _quantise_dtypes(path) -> set[int]:
    """The element types QuantizeLinear writes, read from its zero-point initializers."""
    model = onnx.load(str(path))
    initializers = {i.name: i for i in model.graph.initializer}
    return {
        initializers[n.input[2]].data_type
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in initializers
    }


@pytest.fixture(scope="module")
def qat_bundle(tiny_run, tiny_sets, tmp_path_factory):
    evaluation, calibration = tiny_sets
    options = ExportOptions(
        formats=("onnx", "tflite"),
        precisions=("int8",),
        latency_repeats=1,
        allow_partial=True,
        onnx_int8_recipes=(Int8Recipe("minmax"),),
        tflite_int8_recipes=(tflite_export.INT8_RECIPES[0],),
        qat=QatSettings(steps=30, synthetic_domain="wild"),
    )
    lines: list[str] = []
    out = tmp_path_factory.mktemp("qat") / "bundle"
    return export_bundle(tiny_run, out, evaluation, calibration, options, progress=lines.append), lines


@pytest.mark.slow
def test_qat_builds_an_int8_variant_with_8_bit_activations(qat_bundle):
    from onnx import TensorProto

    result, _ = qat_bundle
    by_name = {v.name: v for v in result.variants}
    assert "onnx-int8-qat" in by_name and "onnx-int8" in by_name, "QAT adds a variant; post-training int8 stays"
    variant = by_name["onnx-int8-qat"]
    assert (variant.format, variant.precision) == ("onnx", "int8")
    entry = variant.to_dict()
    assert (entry["weights"], entry["activations"]) == ("int8", "int8")
    assert "QAT: 30 steps" in entry["recipe"] and "fresh synthetic faces (wild" in entry["recipe"]
    path = result.bundle_dir / variant.file
    assert path.exists()
    assert _quantise_dtypes(path) == {TensorProto.INT8}, "every QuantizeLinear writes int8, none int16"


@pytest.mark.slow
def test_qat_variant_goes_through_the_gate_with_both_range_sources(qat_bundle):
    result, lines = qat_bundle
    variant = next(v for v in result.variants if v.name == "onnx-int8-qat")
    assert [a.label for a in variant.attempts] == ["qat-minmax", "qat-ranges"]
    for attempt in variant.attempts:
        report = attempt.report
        assert 0.9 < report.mean_cos <= 1.0 and 0.0 <= report.flip_share <= 1.0
        assert np.isfinite(report.p1_cos) and np.isfinite(report.accuracy_drop)
    entry = variant.to_dict()
    assert entry["limits"]["max_flip_share"] == 0.01 and entry["verdict"] in ("pass", "fail")
    assert entry["parity"]["flip_share"] == variant.final.report.flip_share
    gated = [line for line in lines if line.startswith("onnx-int8-qat") and "gating on 200 images" in line]
    assert len(gated) == 2, "both attempts are judged on the evaluation images"
    assert "qat: fine-tuning 30 steps on 960 fresh synthetic faces" in lines


@pytest.mark.slow
def test_the_same_fine_tune_builds_a_full_integer_tflite_variant(qat_bundle):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    result, lines = qat_bundle
    assert sum(line.startswith("qat: fine-tuning") for line in lines) == 1, "one fine-tune serves both formats"
    by_name = {v.name: v for v in result.variants}
    assert "tflite-int8" in by_name, "post-training tflite-int8 stays beside the QAT variant"
    variant = by_name["tflite-int8-qat"]
    assert [a.label for a in variant.attempts] == ["qat-int8-integer-prelu", "qat-int8"], "both PReLU forms judged"
    entry = variant.to_dict()
    assert (entry["format"], entry["weights"], entry["activations"]) == ("tflite", "int8", "int8")
    assert entry["input_dtype"] == "int8" and entry["output_dtype"] == "int8", "int8 in and out, as NPUs take"
    assert "QAT: 30 steps" in entry["recipe"]
    interpreter = Interpreter(model_path=str(result.bundle_dir / variant.file))
    kinds = {d["dtype"] for d in interpreter.get_tensor_details() if len(d["shape"]) == 4}
    assert kinds <= {np.int8, np.int32}, f"every activation is integer, found {kinds}"


def test_a_failing_fine_tune_is_the_qat_variants_failure_not_the_exports(tiny_run, tiny_sets, tmp_path, monkeypatch):
    from nptface.edge_export import qat

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("torchao could not trace the model")

    monkeypatch.setattr(qat, "fine_tune", broken)
    evaluation, calibration = tiny_sets
    options = ExportOptions(
        formats=("onnx",),
        precisions=("int8",),
        latency_repeats=1,
        allow_partial=True,
        onnx_int8_recipes=(Int8Recipe("minmax"),),
        qat=QatSettings(steps=3),
    )
    result = export_bundle(tiny_run, tmp_path / "b", evaluation, calibration, options)
    by_name = {v.name: v for v in result.variants}
    failed = by_name["onnx-int8-qat"]
    assert not failed.built and [a.label for a in failed.attempts] == ["qat-minmax", "qat-ranges"]
    assert all(a.error == "RuntimeError: torchao could not trace the model" for a in failed.attempts)
    assert calls == [1], "a failed fine-tune is not run again for the next attempt"
    assert by_name["onnx-int8"].built, "the post-training variant is still built and judged"
