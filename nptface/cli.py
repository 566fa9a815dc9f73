"""The one ``nptface`` command. Thin on purpose: it parses arguments and calls the packages.

Every option shows its default in ``--help``, ``-v`` works before or after the subcommand, and a
command whose optional dependencies are missing says which extra to install instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nptface import __version__
from nptface.core.cpu_threads import prefer_passive_waiting

if TYPE_CHECKING:
    import numpy as np

    from nptface.edge_export.qat import QatSettings
    from nptface.on_device.gallery import Gallery
    from nptface.on_device.runtime import DeviceModel


def _data_synth(args: argparse.Namespace) -> int:
    from nptface.core.datasets import (
        SyntheticFaceDataset,
        preview_grid,
        write_image_folder,
    )
    from nptface.core.synthetic import CLIENT_IDS, HELDOUT_IDS, SERVER_IDS

    if args.out is None and args.preview is None:
        raise SystemExit("nptface data synth: give --out DIR (write an ImageFolder), --preview PNG, or both")
    id_range = {"server": SERVER_IDS, "client": CLIENT_IDS, "heldout": HELDOUT_IDS}[args.id_range]
    if args.first_id + args.identities > len(id_range):
        raise SystemExit(f"nptface data synth: the {args.id_range} range holds {len(id_range)} identities")
    identities = id_range[args.first_id : args.first_id + args.identities]
    dataset = SyntheticFaceDataset(identities, args.images, args.domain, args.seed, args.size, args.lookalike_share)
    if args.preview is not None:
        preview_grid(dataset, identities=min(args.identities, 8), per_identity=min(args.images, 8)).save(args.preview)
        print(f"preview grid (rows = identities) written to {args.preview}")
    if args.out is not None:
        write_image_folder(dataset, args.out, args.format)
        print(
            f"{len(dataset)} images of {dataset.num_classes} identities ({args.id_range} ids from "
            f"{identities[0]}, domain {args.domain}) written to {args.out}"
        )
    return 0


def _data_align(args: argparse.Namespace) -> int:
    from nptface.on_device.face_crops import FaceCropper, crop_folder
    from nptface.on_device.face_detection import FaceDetector

    report = crop_folder(args.src, args.dst, FaceCropper(FaceDetector(args.runtime), args.size))
    print(report.summary())
    print(f"aligned crops ({args.size}x{args.size}, ArcFace five-point template) written to {args.dst}")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from nptface.core.complexity import measure
    from nptface.core.mobilefacenet import MobileFaceNet, MobileFaceNetConfig

    if args.run is not None:
        from nptface.core.checkpoint import load_backbone

        model, _ = load_backbone(args.run)
        config = model.config
    else:
        config = MobileFaceNetConfig(args.embedding_dim, args.width, args.input_size)
        model = MobileFaceNet(config)
    complexity = measure(model, (3, config.input_size, config.input_size))
    print(
        f"MobileFaceNet width={config.width} input={config.input_size}x{config.input_size} "
        f"embedding_dim={config.embedding_dim}"
    )
    print(complexity.summary())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from nptface.core.atomic import atomic_write_json
    from nptface.core.checkpoint import load_backbone
    from nptface.core.evaluation import evaluate_model
    from nptface.server.training.config import EvalSet
    from nptface.server.training.data import build_eval_set

    if (args.data is None) == (args.bin is None):
        raise SystemExit("nptface eval: give exactly one of --data FOLDER or --bin FILE")
    if args.align and args.bin is not None:
        raise SystemExit("nptface eval: --align detects faces in a --data folder of photos; a .bin holds aligned crops")
    model, _ = load_backbone(args.run)
    if args.bin is not None:
        spec, source = EvalSet(kind="bin", path=args.bin), args.bin
    else:
        kind = "lfw" if args.lfw_pairs is not None else "imagefolder"
        spec = EvalSet(
            kind=kind,
            path=args.data,
            pairs=args.lfw_pairs or args.pairs or "",
            pair_protocol=args.pair_protocol,
            per_fold=args.per_fold,
            skip_bad=args.skip_bad,
            seed=args.seed,
        )
        source = args.data
    data = build_eval_set(spec, model.config.input_size)
    alignment: dict[str, Any] = {}
    if args.align:
        from nptface.on_device.aligned_eval_set import align_eval_set
        from nptface.on_device.face_crops import FaceCropper
        from nptface.on_device.face_detection import FaceDetector

        with tempfile.TemporaryDirectory(prefix="nptface-eval-") as workdir:
            aligned = align_eval_set(
                data.dataset, data.pairs, FaceCropper(FaceDetector(), model.config.input_size), workdir
            )
            result = evaluate_model(model, aligned.dataset, aligned.pairs, flip=args.flip)
        print(aligned.summary_line())
        print(f"{source}: {len(aligned.dataset)} aligned faces, {len(aligned.pairs)} pairs")
        alignment = {"alignment": aligned.to_dict()}
    else:
        result = evaluate_model(model, data.dataset, data.pairs, flip=args.flip)
        print(f"{source}: {len(data.dataset)} images, {len(data.pairs)} pairs")
    for line in result.summary_lines():
        print(line)
    out = Path(args.out) if args.out else Path(args.run) / "eval.json"
    atomic_write_json(out, {"data": str(source), "run": str(args.run), **alignment, **result.to_dict(roc_points=200)})
    print(f"metrics written to {out}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from nptface.quickstart import QuickstartOptions, run_quickstart

    run_quickstart(
        QuickstartOptions(
            runs=Path(args.runs),
            bundles=Path(args.bundles),
            name=args.name,
            overrides=tuple(args.set),
            progress=not args.no_progress,
            federated=not args.no_federated,
            export=not args.no_export,
            command=("nptface", *sys.argv[1:]),
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train; a run the collapse guard stopped is one ``nptface: error:`` line and exit 1, not a traceback."""
    from nptface.server.training.collapse_guard import CollapseError
    from nptface.server.training.config import load_config
    from nptface.server.training.trainer import train_from_config

    overrides = [*args.set, *([f"model.init={json.dumps(args.init_from)}"] if args.init_from else [])]
    config = load_config(args.config, overrides)
    try:
        result = train_from_config(config, args.run_dir, resume="must" if args.resume else "never")
    except CollapseError as error:
        print(f"nptface: error: {error}", file=sys.stderr)
        return 1
    if result.final_eval:
        for name, evaluation in result.final_eval.items():
            print(f"{name}:")
            for line in evaluation.summary_lines():
                print(f"  {line}")
    print(f"run directory: {result.run_dir}")
    return 0


def _positive_lr(text: str) -> str:
    """A learning rate kept as typed (it names the run folder), refused unless a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a learning rate > 0, got {text!r}")
    return text


def _bench_losses(args: argparse.Namespace) -> int:
    from nptface.server.training import loss_benchmark as bench

    out = Path(args.out)
    seeds = list(range(args.seeds))
    if args.tune_lr and not args.scale:
        raise ValueError("--tune-lr: learning-rate tuning is part of the scale comparison; add --scale")
    if args.scale:
        unknown = sorted(set(args.variants or ()) - set(bench.SCALE_VARIANTS))
        if unknown:
            raise ValueError(f"--variants: unknown head(s) {unknown}; expected some of {sorted(bench.SCALE_VARIANTS)}")
        variants = {name: bench.SCALE_VARIANTS[name] for name in args.variants or bench.SCALE_VARIANTS}
        base = [*bench.SCALE_BUDGET, *args.set]
        if args.tune_lr:
            tuned = bench.run_tuned(variants, args.tune_lr, seeds, out, base)
            print(bench.summarise_tuning(tuned, out, "scale-tuning"))
            title = "Loss comparison at scale, each head at its best learning rate"
            print(bench.summarise(tuned.outcomes, title, out, "scale-tuned"))
            print(f"tables and per-run results written under {out}")
            return 0
        bench.run_benchmark(variants, seeds, out / "scale", base)
        outcomes = bench.finished_outcomes(bench.SCALE_VARIANTS, out / "scale", base)
        print(bench.summarise(outcomes, "Loss comparison at scale on synthetic held-out identities", out, "scale"))
        print(f"tables and per-run results written under {out}")
        return 0
    if args.data == "synthetic":
        base, where = [*bench.SYNTHETIC_BUDGET, *args.set], "synthetic held-out identities"
    else:
        base = [*bench.FOLDER_BUDGET, f"data.path={json.dumps(args.data)}", *args.set]
        where = f"held-out identities of {args.data}"
    sections = []
    if not args.ablation_only:
        outcomes = bench.run_benchmark(bench.LOSS_VARIANTS, seeds, out / "losses", base)
        sections.append(bench.summarise(outcomes, f"Loss comparison on {where}", out, "losses"))
    if args.ablation or args.ablation_only:
        ablation_seeds = seeds[: args.ablation_seeds]
        margin = bench.run_benchmark(bench.MARGIN_VARIANTS, ablation_seeds, out / "ablation", base)
        sections.append(bench.summarise(margin, f"NPT margin delta/2r^2 (k=6) on {where}", out, "ablation-margin"))
        k = bench.run_benchmark(bench.K_VARIANTS, ablation_seeds, out / "ablation", base)
        sections.append(bench.summarise(k, f"NPT k (delta=1) on {where}", out, "ablation-k"))
    print("\n".join(sections))
    print(f"tables and per-run results written under {out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _qat_settings(args: argparse.Namespace) -> QatSettings:
    from nptface.edge_export.qat import QatSettings

    defaults = QatSettings()
    images = args.qat_images or ("synthetic" if args.calibration == "synthetic" else "calibration")
    return QatSettings(
        steps=defaults.steps if args.qat_steps is None else args.qat_steps,
        lr=defaults.lr if args.qat_lr is None else args.qat_lr,
        synthetic_domain=args.domain if images == "synthetic" else None,
    )


def _export(args: argparse.Namespace) -> int:
    from nptface.edge_export.onnx_export import INT8_RECIPES
    from nptface.edge_export.pipeline import ExportOptions, export_run
    from nptface.on_device.face_detection import bundled_detector

    if not args.qat and (args.qat_steps is not None or args.qat_lr is not None or args.qat_images is not None):
        raise SystemExit("nptface export: --qat-steps, --qat-lr and --qat-images set up --qat; add --qat")
    recipes = {r.label: r for r in INT8_RECIPES}
    chosen = [label.strip() for label in (args.onnx_int8_recipes or ",".join(recipes)).split(",") if label.strip()]
    unknown = [label for label in chosen if label not in recipes]
    if unknown or not chosen:
        raise SystemExit(
            f"nptface export: --onnx-int8-recipes takes labels from {','.join(recipes)}; got {args.onnx_int8_recipes!r}"
        )
    options = ExportOptions(
        onnx_int8_recipes=tuple(recipes[label] for label in chosen),
        formats=tuple(f.strip() for f in args.formats.split(",") if f.strip()),
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        tflite_nhwc=args.tflite_layout == "nhwc",
        allow_partial=args.allow_partial,
        overwrite=args.overwrite,
        latency_repeats=args.latency_repeats,
        detector=bundled_detector(),
        qat=_qat_settings(args) if args.qat else None,
    )
    out = args.out or str(Path("bundles") / Path(args.run).resolve().name)
    result = export_run(
        args.run,
        out,
        args.calibration,
        args.eval,
        args.domain,
        options,
        ["nptface", *sys.argv[1:]],
        progress=lambda line: print(line, flush=True),
    )
    print(result.table)
    print(f"bundle: {result.bundle_dir} ({len(result.shipped)} variants shipped; manifest.json, README.md, report.md)")
    gated = [v.name for v in result.rejected if v.built]
    if gated:
        print(f"rejected by the parity gate (see {result.bundle_dir}/rejected/): {', '.join(gated)}", file=sys.stderr)
    for v in result.rejected:
        if not v.built:
            print(f"not built: {v.name} ({'; '.join(v.final.failures)})", file=sys.stderr)
    if result.unmet:  # a rejected attempt whose format and precision another variant delivers is not a failure
        return 0 if args.allow_partial else 1
    return 0


def _federation_command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run``, with a failed engine or an unusable global model as one ``nptface: error:`` line and exit 1."""

    def guarded(args: argparse.Namespace) -> int:
        from nptface.server.federation.round_loop import FederationError
        from nptface.simulation.run import SimulationError

        try:
            return run(args)
        except (FederationError, SimulationError) as error:
            print(f"nptface: error: {error}", file=sys.stderr)
            return 1

    return guarded


def _fed_bench_one_owner(args: argparse.Namespace) -> int:
    from nptface.simulation.one_owner import run_from_args

    run_from_args(args)
    out = Path(args.out)
    print(f"table: {out / 'one-owner.md'} (curves {out / 'one-owner.png'}, one-owner.json); runs under {out}/seed-N/")
    return 0


def _fed_simulate(args: argparse.Namespace) -> int:
    from nptface.core.run_settings import parse_override
    from nptface.server.federation.config import SHARING_MODES
    from nptface.simulation.comparison import (
        robustness_configs,
        run_comparison,
        sharing_configs,
    )
    from nptface.simulation.config import SimulationConfig
    from nptface.simulation.experiment import run_experiment

    values = dict(parse_override(item, SystemExit) for item in args.set)
    modes = [m.strip() for m in (args.proxy_sharing or "").split(",") if m.strip()]
    unknown = [m for m in modes if m not in SHARING_MODES]
    if unknown:
        raise SystemExit(f"nptface fed simulate: --proxy-sharing takes {', '.join(SHARING_MODES)}; got {unknown}")
    if len(modes) == 1:
        values["proxy-sharing"] = modes[0]
    if args.attack:
        values["attack-linkage"] = True
    config = SimulationConfig.from_run_config(values)
    if args.poison:
        configs = robustness_configs(config, args.poison, [m.strip() for m in args.robust.split(",") if m.strip()])
        result = run_comparison(configs, Path(config.fed.out_dir), "robustness", args.cpus_per_client)
        print(result.table)
        print(f"table: {result.out_dir / 'robustness.md'}; runs under {result.out_dir}/")
        return 0
    if len(modes) > 1:
        result = run_comparison(
            sharing_configs(config, modes, args.attack is not None),
            Path(config.fed.out_dir),
            "privacy",
            args.cpus_per_client,
        )
        print(result.table)
        print(f"table: {result.out_dir / 'privacy.md'}; runs under {result.out_dir}/sharing-<mode>/")
        return 0
    experiment = run_experiment(
        config, baselines=not args.no_baselines, cpus_per_client=args.cpus_per_client, progress=not args.no_progress
    )
    print(experiment.table)
    print(
        f"report: {experiment.out_dir / 'report.md'} (curves {experiment.out_dir / 'federated.png'}, results.json); "
        f"federated model: {experiment.out_dir} (a run directory: nptface export --run {experiment.out_dir})"
    )
    return 0


class UsageError(ValueError):
    """Arguments that do not fit together; exit status 2, as for argparse's own errors."""


# Exit statuses of verify and identify, so scripts can branch on the decision (argparse exits 2 too).
MATCH, NO_MATCH, ERROR = 0, 1, 2
DECISION_COMMANDS = ("verify", "identify")


def _device_model(args: argparse.Namespace, gallery_bundle: str | None = None) -> DeviceModel:
    from nptface.on_device.runtime import open_model

    bundle = args.bundle or gallery_bundle
    if bundle is None:
        raise UsageError(f"nptface {args.command}: give --bundle BUNDLE_DIR")
    model = open_model(bundle, args.runtime, args.variant, align=args.align)
    detector = "the bundle's detector" if model.bundle.detector else "nptface's detector: the bundle ships none"
    faces = f"faces detected ({detector}) and aligned" if args.align else "images taken as aligned crops (--no-align)"
    # With --json, stdout holds only the JSON document.
    print(
        f"model: {model.bundle.root} variant {model.variant} on {model.runtime}; {faces}",
        file=sys.stderr if getattr(args, "json", False) else sys.stdout,
    )
    return model


def _far_label(far: float) -> str:
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"  # 1e-3, as the page writes it


def _decision_rule(args: argparse.Namespace, model: DeviceModel) -> dict[str, object]:
    """The threshold to decide with, and where it came from: --threshold, or an operating point at a FAR."""
    if args.threshold is not None:
        if args.far is not None or args.operating_point is not None:
            raise UsageError(
                f"nptface {args.command}: --threshold replaces --far/--operating-point; give one or the other"
            )
        if not -1 <= args.threshold <= 1:
            raise UsageError(f"nptface {args.command}: --threshold is a cosine in [-1, 1], got {args.threshold}")
        return {"threshold": args.threshold, "operating_point": None, "far": None, "label": "--threshold"}
    point = args.operating_point or model.bundle.default_operating_point
    far = model.bundle.default_far(point) if args.far is None else args.far
    threshold = model.bundle.threshold(far, point)
    return {"threshold": threshold, "operating_point": point, "far": far, "label": f"{point}, FAR={_far_label(far)}"}


def _report_decision(args: argparse.Namespace, rule: dict[str, object], payload: dict[str, object], line: str) -> int:
    matched = bool(payload["match"])
    if args.json:
        rule = {key: value for key, value in rule.items() if key != "label"}
        print(json.dumps({**payload, **rule, "decision": "match" if matched else "no match"}, indent=2))
    else:
        print(line)
    return MATCH if matched else NO_MATCH


def _verify_line(score: float, rule: dict[str, object]) -> str:
    verdict = "match" if score >= rule["threshold"] else "no match"
    return f"cosine = {score:.4f}  threshold({rule['label']}) = {rule['threshold']:.4f}  -> {verdict}"


def _enroll(args: argparse.Namespace) -> int:
    from nptface.on_device.gallery import Gallery, load_gallery, save_gallery

    gallery_path = Path(args.gallery)
    existing = load_gallery(gallery_path) if gallery_path.exists() else None
    model = _device_model(args, existing.bundle if existing else None)
    if existing is None:
        gallery = Gallery(model.model_sha256, str(model.bundle.root.resolve()), model.variant)
    else:
        gallery = existing
        gallery.check_model(model.model_sha256, model.variant, str(gallery_path))
    count = gallery.enroll(args.name, model.embed_files(args.images))
    save_gallery(gallery, gallery_path)
    print(f"enrolled {args.name!r}: {count} image(s) in the template; {len(gallery.names)} people in {gallery_path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from nptface.core.verification import cosine_scores
    from nptface.on_device.gallery import load_gallery

    if args.gallery is None:
        if len(args.images) != 2 or args.name is not None:
            raise UsageError("nptface verify: give two images (IMG_A IMG_B), or --gallery G --name NAME and one image")
        model = _device_model(args)
        rule = _decision_rule(args, model)
        embeddings = model.embed_files(args.images)
        score = float(cosine_scores(embeddings[:1], embeddings[1:])[0])
        where = f"{args.images[0]} vs {args.images[1]}"
        payload = {"images": args.images, "name": None}
    else:
        if len(args.images) != 1 or args.name is None:
            raise UsageError("nptface verify: with --gallery give --name NAME and exactly one image")
        gallery = load_gallery(args.gallery)
        model = _device_model(args, gallery.bundle)
        gallery.check_model(model.model_sha256, model.variant, args.gallery)
        rule = _decision_rule(args, model)
        score = gallery.score(args.name, model.embed_files(args.images)[0])
        where = f"{args.images[0]} as {args.name!r}"
        payload = {"images": args.images, "name": args.name}
    payload |= {"score": score, "match": score >= rule["threshold"], "variant": model.variant, "runtime": model.runtime}
    return _report_decision(args, rule, payload, f"{where}: {_verify_line(score, rule)}")


def _ranking(gallery: Gallery, embedding: np.ndarray, top: int, threshold: float) -> list[dict[str, object]]:
    return [
        {"rank": rank, "name": m.name, "score": m.score, "match": m.score >= threshold}
        for rank, m in enumerate(gallery.top(embedding, top), start=1)
    ]


def _ranking_lines(matches: list[dict[str, object]]) -> list[str]:
    return [
        f"  {m['rank']}. {m['name']}  cosine = {m['score']:.4f}" + ("  -> match" if m["match"] else "") for m in matches
    ]


def _identify(args: argparse.Namespace) -> int:
    from nptface.on_device.gallery import load_gallery

    if args.all_faces and not args.align:
        raise UsageError("nptface identify: --all-faces finds the faces in a photo; it cannot work with --no-align")
    gallery = load_gallery(args.gallery)
    model = _device_model(args, gallery.bundle)
    gallery.check_model(model.model_sha256, model.variant, args.gallery)
    rule = _decision_rule(args, model)
    threshold = rule["threshold"]
    of_gallery = f"of {len(gallery.names)} (cosine; threshold({rule['label']}) = {threshold:.4f})"
    payload: dict[str, object] = {"image": args.image}
    if args.all_faces:
        faces, embeddings = model.embed_every_face(args.image)
        lines = [f"{args.image}: {len(faces)} face(s), largest first"]
        results = []
        for number, (face, embedding) in enumerate(zip(faces, embeddings), start=1):
            matches = _ranking(gallery, embedding, args.top, threshold)
            box = [round(float(v), 1) for v in face.box]
            matched = bool(matches and matches[0]["match"])
            results.append(
                {"face": number, "box": box, "detection_score": face.score, "matches": matches, "match": matched}
            )
            lines += [f"face {number} at box {box}: top {len(matches)} {of_gallery}", *_ranking_lines(matches)]
        payload |= {"faces": results, "match": any(r["match"] for r in results)}
    else:
        matches = _ranking(gallery, model.embed_files([args.image])[0], args.top, threshold)
        lines = [f"{args.image}: top {len(matches)} {of_gallery}", *_ranking_lines(matches)]
        payload |= {"matches": matches, "match": bool(matches and matches[0]["match"])}
    payload |= {"variant": model.variant, "runtime": model.runtime}
    return _report_decision(args, rule, payload, "\n".join(lines))


def _calibrate(args: argparse.Namespace) -> int:
    from nptface.edge_export.bundle import add_operating_point
    from nptface.on_device.calibration import calibrate

    name = args.name or Path(args.data).resolve().name
    try:
        fars = None if args.fars is None else [float(f) for f in args.fars.split(",") if f.strip()]
    except ValueError:
        fars = []
    if fars is not None and not (fars and all(0 < far < 1 for far in fars)):
        raise UsageError(
            f"nptface calibrate: --fars takes false accept rates in (0, 1), like 1e-3,1e-4; got {args.fars!r}"
        )
    model = _device_model(args)
    point = calibrate(model, args.data, fars)
    bundle = add_operating_point(model.bundle.root, name, point, overwrite=args.overwrite)
    print(
        f"{args.data}: {point['identities']} identities, {point['images']} images, "
        f"{point['pairs']['genuine']} genuine + {point['pairs']['impostor']} impostor pairs"
    )
    for key, threshold in sorted(point["cosine"].items(), key=lambda item: -float(item[0])):
        print(f"  FAR {_far_label(float(key))}: cosine >= {threshold:.4f} (TAR {point['tar'][key]:.3f} on this folder)")
    default = bundle.default_operating_point
    print(
        f"operating point {name!r} written to {bundle.root / 'manifest.json'} (the models are unchanged); "
        f"verify/identify now use {default!r} unless given --operating-point"
    )
    return 0


def _demo_serve(args: argparse.Namespace) -> int:
    from nptface.on_device.server import make_server
    from nptface.on_device.tls import (
        ANY_ADDRESS,
        default_tls_dir,
        fingerprint,
        self_signed_certificate,
        served_names,
        server_context,
    )

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("nptface demo serve: give --tls-cert and --tls-key together")
    if args.tls and args.tls_cert:
        raise UsageError("nptface demo serve: --tls makes a self-signed certificate; --tls-cert/--tls-key bring yours")
    names = served_names(args.host)
    cert, key = (args.tls_cert, args.tls_key) if args.tls_cert else (None, None)
    if args.tls:
        cert, key = self_signed_certificate(args.tls_dir or default_tls_dir(), names)
    context = server_context(cert, key) if cert else None
    try:
        server = make_server(args.bundle, args.host, args.port, tls=context)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise SystemExit(f"nptface demo serve: cannot listen on {args.host}:{args.port}: {error}") from error
    host, port = server.server_address[:2]
    scheme = "https" if context else "http"
    shown = [n for n in names if n != "::1"] if args.host in ANY_ADDRESS else [host]
    urls = ", ".join(f"{scheme}://{'[' + n + ']' if ':' in n else n}:{port}/" for n in shown)
    print(f"on-device demo of {args.bundle}: open {urls} (inference runs in the browser; Ctrl+C stops)")
    if context:
        print(f"TLS certificate {cert}: SHA-256 fingerprint {fingerprint(cert)}")
        if args.tls:
            print("  self-signed: the browser will warn; accept it only if the fingerprint it shows is this one")
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            "  plain HTTP: other devices get an insecure context, where browsers disable the camera; "
            "use --tls (or --tls-cert/--tls-key) for phones",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _add_device_options(
    parser: argparse.ArgumentParser, bundle_required: bool = False, align_default: bool = True
) -> None:
    parser.add_argument(
        "--bundle",
        required=bundle_required,
        help="a bundle folder (nptface export); with --gallery, defaults to the gallery's bundle",
    )
    parser.add_argument(
        "--runtime",
        choices=("onnxruntime", "litert"),
        default="onnxruntime",
        help="onnxruntime (ONNX variants) or litert (the LiteRT interpreter, TFLite variants)",
    )
    parser.add_argument(
        "--variant",
        help="a shipped variant name (default: the runtime's int8, else w8-dynamic, else w8a16, else fp16, else fp32)",
    )
    parser.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=align_default,
        help="detect the largest face in each image and align it (photos); --no-align takes images as ready crops",
    )


def _add_decision_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operating-point",
        metavar="NAME",
        help="whose thresholds decide: 'export' (the bundle's own) or one added by nptface calibrate "
        "(default: the newest calibrated one, else export)",
    )
    parser.add_argument(
        "--far",
        type=float,
        help="the operating point's threshold at this FAR (default: 1e-3, or the point's strictest FAR without one)",
    )
    parser.add_argument("--threshold", type=float, help="decide with this cosine instead of an operating point")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (the decision, score(s), threshold and where it came from) on stdout",
    )


# The pip extra each command's optional dependencies come from (pyproject's optional-dependencies),
# and the packages imported before the command starts, so that a missing one stops it at once.
EXTRA_OF_COMMAND = {
    "data": "export",  # align runs the face detector on onnxruntime or LiteRT
    "eval": "export",  # --align runs the face detector on onnxruntime
    "export": "export",
    "enroll": "export",
    "verify": "export",
    "identify": "export",
    "calibrate": "export",
    "demo": "export",
    "fed": "fl",
    "quickstart": "all",
}
IMPORTED_FIRST = {"export": ("onnx", "onnxruntime"), "fed": ("flwr",)}


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a default worth stating (not None or off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if (
            "%(default)" in help_text
            or not action.option_strings
            or action.default in (None, False, [])
            or action.default is argparse.SUPPRESS
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


class _DeferredParser(argparse.ArgumentParser):
    """A subcommand whose options another module's ``configure(parser)`` adds, on first use (parse or help).

    One parser serves both that module's own script and ``nptface``, with no copy of its options, and
    ``nptface`` parses its other commands without importing that module (the one-owner benchmark pulls
    in torch and Flower: seconds). A missing optional package names its extra, as for any command.
    """

    def __init__(self, *args: Any, configure: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configure = configure

    def _configured(self) -> None:
        if not self._configure:
            return
        module, _, name = self._configure.partition(":")
        self._configure = ""
        try:
            configure = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as error:
            if (error.name or "nptface").partition(".")[0] == "nptface":
                raise
            self.exit(ERROR, f"nptface: error: {_needs_extra(self.prog.split()[1], error.name)}\n")
        configure(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self._configured()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._configured()
        return super().format_usage()

    def format_help(self) -> str:
        self._configured()
        return super().format_help()


def _needs_extra(command: str, package: str | None) -> str:
    extra = EXTRA_OF_COMMAND.get(command, "all")
    return (
        f"nptface {command} needs the optional package {package!r}: "
        f'pip install "nptface[{extra}]" (or "nptface[all]" for every command)'
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``, nested ones too."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found += [subparser, *_subparsers(subparser)]
    return found


def _finish(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Defaults in every help; ``-v`` on every command too (SUPPRESS: an absent one keeps the top's value)."""
    for subparser in [parser, *_subparsers(parser)]:
        subparser.formatter_class = _DefaultsHelpFormatter
        if subparser is not parser and not any(isinstance(a, argparse._SubParsersAction) for a in subparser._actions):
            subparser.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                default=argparse.SUPPRESS,
                help="log progress details (also accepted before the command)",
            )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nptface", description="Face verification with the NPT loss.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--version", action="version", version=f"nptface {__version__}", help="print the version and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="face data: synthetic sets, aligned crops of photos").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="render synthetic identities to an ImageFolder and/or a preview grid")
    synth.add_argument("--out", help="ImageFolder to write (one sub-folder per identity)")
    synth.add_argument("--preview", help="PNG grid to write (rows = identities)")
    synth.add_argument("--identities", type=int, default=10, help="how many identities to render")
    synth.add_argument("--images", type=int, default=10, help="images per identity")
    synth.add_argument("--domain", default="wild", help="studio, wild, phone-lowlight or cctv-lowres")
    synth.add_argument(
        "--id-range",
        choices=["server", "client", "heldout"],
        default="server",
        help="which disjoint identity range to draw from",
    )
    synth.add_argument("--first-id", type=int, default=0, help="offset inside the range")
    synth.add_argument("--size", type=int, default=112, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0, help="rendering seed: the same seed draws the same faces")
    synth.add_argument(
        "--lookalike-share",
        type=float,
        default=0.3,
        help="share of identity families whose members look alike (0 to 1)",
    )
    synth.add_argument("--format", choices=["png", "jpeg"], default="png", help="image file format")
    synth.set_defaults(func=_data_synth)
    align = data.add_parser(
        "align", help="detect the largest face in every photo of an ImageFolder and write its aligned crop"
    )
    align.add_argument("src", help="ImageFolder of photos (one sub-folder per person)")
    align.add_argument("dst", help="folder for the aligned crops (same tree, PNG); outside SRC")
    align.add_argument("--size", type=int, default=112, help="crop side in pixels (the template scales with it)")
    align.add_argument(
        "--runtime",
        choices=("onnxruntime", "litert"),
        default="onnxruntime",
        help="runs the detector's .onnx on onnxruntime or its .tflite on LiteRT",
    )
    align.set_defaults(func=_data_align)

    model = commands.add_parser("model", help="model inspection").add_subparsers(dest="model_command", required=True)
    info = model.add_parser("info", help="count parameters and MACs of a MobileFaceNet")
    info.add_argument("--run", help="a run directory (otherwise the architecture from the options)")
    info.add_argument("--width", type=float, default=1.0, help="channel width multiplier (1.0 = the paper's net)")
    info.add_argument("--input-size", type=int, default=112, help="input image side in pixels")
    info.add_argument("--embedding-dim", type=int, default=256, help="size of the face embedding")
    info.set_defaults(func=_model_info)

    evaluate = commands.add_parser("eval", help="verify a folder of faces with a trained run")
    evaluate.add_argument("--run", required=True, help="run directory with model.safetensors and checkpoint.json")
    evaluate.add_argument("--data", help="ImageFolder: one sub-folder per identity")
    evaluate.add_argument("--bin", help="an insightface verification .bin (lfw.bin, cfp_fp.bin, agedb_30.bin)")
    evaluate.add_argument("--pairs", help="file of 'path_a path_b 1|0' lines, relative to --data")
    evaluate.add_argument("--lfw-pairs", help="LFW's pairs.txt for an LFW folder given as --data")
    evaluate.add_argument(
        "--pair-protocol",
        choices=["all", "lfw"],
        default="all",
        help="without --pairs: all genuine pairs + as many impostors, or 10 LFW-style folds",
    )
    evaluate.add_argument("--per-fold", type=int, default=300, help="pairs of each kind per fold (lfw protocol)")
    evaluate.add_argument("--flip", action="store_true", help="add embeddings of mirrored images")
    evaluate.add_argument("--skip-bad", action="store_true", help="skip and count undecodable images")
    evaluate.add_argument(
        "--seed",
        type=int,
        default=0,
        help="protocol seed that draws the pairs without --pairs/--lfw-pairs (as a training "
        "config's eval.sets[].seed; the run's seed plays no part)",
    )
    evaluate.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="--data holds photos: detect and align the largest face in each (photos without one are left out, "
        "with their pairs, and listed); --no-align takes the images as ready crops, like training data",
    )
    evaluate.add_argument("--out", help="metrics JSON (default: RUN/eval.json)")
    evaluate.set_defaults(func=_eval)

    quick = commands.add_parser(
        "quickstart",
        help="the main job on synthetic faces: train with NPT, fine-tune "
        "federated, export a parity-gated bundle, report each stage",
    )
    quick.add_argument("--runs", default="runs", help="folder for run directories")
    quick.add_argument(
        "--name",
        default="quickstart",
        help="names the run (RUNS/NAME), its federated run (RUNS/NAME-federated) and bundle (BUNDLES/NAME)",
    )
    quick.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the synthetic-quick config, e.g. --set optim.epochs=4 (repeatable)",
    )
    quick.add_argument("--no-progress", action="store_true", help="no progress bars")
    quick.add_argument("--bundles", default="bundles", help="folder for the exported bundle")
    quick.add_argument("--no-federated", action="store_true", help="skip the federated fine-tuning stage")
    quick.add_argument("--no-export", action="store_true", help="skip the export stage")
    quick.set_defaults(func=_quickstart)

    train = commands.add_parser("train", help="train a backbone + proxy head from a config (torchrun for several GPUs)")
    train.add_argument(
        "config",
        help="a shipped config name (synthetic-quick, casia-mobilefacenet-npt, "
        "ms1m-mobilefacenet-npt, real-faces) or a path to a .toml file",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override a config value, e.g. --set optim.lr=0.05 --set head.name="arcface"',
    )
    train.add_argument("--run-dir", help="run directory (default: run.output_dir / run.name)")
    train.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    train.add_argument(
        "--init-from",
        metavar="RUN",
        help="fine-tune from a trained model: a run directory or its model.safetensors (sets "
        "model.init; its proxies are reused when the identities match, else imprinted)",
    )
    train.set_defaults(func=_train)

    export = commands.add_parser("export", help="ONNX/TFLite/Core ML variants of a run, parity-gated, as a bundle")
    export.add_argument("--run", required=True, help="a run directory (checkpoint.json + model.safetensors)")
    export.add_argument("--formats", default="onnx,tflite,coreml", help="comma-separated subset of onnx,tflite,coreml")
    export.add_argument("--precisions", default="fp32,fp16,int8", help="comma-separated subset of fp32,fp16,int8")
    export.add_argument(
        "--calibration",
        default="synthetic",
        help="'synthetic' (held-out identities) or an ImageFolder of >= 200 face crops",
    )
    export.add_argument("--eval", default="synthetic", help="'synthetic' or an ImageFolder the gate judges on")
    export.add_argument("--domain", default="wild", help="synthetic imaging domain for the default image sets")
    export.add_argument("--out", help="bundle folder (default: bundles/<run name>)")
    export.add_argument(
        "--tflite-layout",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="input layout of the TFLite variants (nhwc: what mobile pipelines hand over)",
    )
    export.add_argument("--latency-repeats", type=int, default=30, help="timed runs per variant for its median latency")
    export.add_argument(
        "--onnx-int8-recipes",
        help="ONNX int8 attempts in order (default: all of minmax, entropy, "
        "percentile, minmax-float-ends, minmax-int16-activations): the calibration methods are all "
        "tried, then remedies until one passes the gate; int16-activation recipes build the onnx-w8a16 "
        "fallback, only when onnx-int8 (8-bit activations) is rejected",
    )
    export.add_argument(
        "--qat",
        action="store_true",
        help="also build onnx-int8-qat and tflite-int8-qat (8-bit activations; for the formats asked for): "
        "fine-tune the folded model once through fake quantisation (distilled to its fp32 embeddings, see "
        "--qat-images), then quantise it for each format; gated like every variant",
    )
    export.add_argument(
        "--qat-images",
        choices=("synthetic", "calibration"),
        help="what --qat distils on: 'synthetic', a new batch of fresh synthetic faces (--domain, held-out "
        "identities no image set uses) every step, or 'calibration', the calibration images augmented "
        "(default: synthetic when --calibration is synthetic, else calibration)",
    )
    export.add_argument("--qat-steps", type=_positive_int, help="fine-tuning steps for --qat (default 1500)")
    export.add_argument(
        "--qat-lr", type=_positive_float, help="peak Adam learning rate for --qat, cosine-decayed to 0 (default 1e-4)"
    )
    export.add_argument("--allow-partial", action="store_true", help="exit 0 even when a variant is rejected")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    export.set_defaults(func=_export)

    fed = commands.add_parser("fed", help="federated fine-tuning (Flower)").add_subparsers(
        dest="fed_command", required=True
    )
    simulate = fed.add_parser(
        "simulate", help="N clients on this machine (Flower simulation, Ray) + baselines + report"
    )
    simulate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run-config key as in pyproject's [tool.flwr.app.config], e.g. --set num-clients=16",
    )
    simulate.add_argument("--no-baselines", action="store_true", help="only the federated run (no FedPer/centralised)")
    simulate.add_argument(
        "--proxy-sharing",
        metavar="MODES",
        help="all|public|none|dp|local-heads; several, comma-separated, give the privacy table",
    )
    simulate.add_argument(
        "--no-progress", action="store_true", help="one plain line per round phase instead of a progress bar"
    )
    simulate.add_argument("--attack", choices=["linkage"], help="measure the proxy-linkage attack every round")
    simulate.add_argument(
        "--poison",
        metavar="KIND:PARTITION,...",
        help="malicious clients (scale, noise, flip), e.g. scale:0,noise:1,flip:2: the robustness table",
    )
    simulate.add_argument(
        "--robust",
        default="fedavg,median,trimmed-mean",
        help="with --poison: backbone aggregators to compare behind the norm screens (fedavg, median, trimmed-mean)",
    )
    simulate.add_argument(
        "--cpus-per-client",
        type=float,
        default=1.0,
        help="CPUs Ray reserves per client (lower runs more clients at once)",
    )
    simulate.set_defaults(func=_federation_command(_fed_simulate))

    fed_bench = fed.add_parser("bench", help="federated benchmarks").add_subparsers(
        dest="fed_bench_command", required=True, parser_class=_DeferredParser
    )
    one_owner = fed_bench.add_parser(
        "one-owner",
        help="one owner per phone: shared bank vs none, dp, local heads, backbone-only, centralised (and fedprox)",
        configure="nptface.simulation.one_owner:configure_parser",
    )
    one_owner.set_defaults(func=_federation_command(_fed_bench_one_owner))

    bench = commands.add_parser("bench", help="benchmarks that train").add_subparsers(
        dest="bench_command", required=True
    )
    losses = bench.add_parser("losses", help="NPT vs ArcFace/CosFace/NormSoftmax/proxy-triplet under one budget")
    losses.add_argument("--data", default="synthetic", help="'synthetic' or an ImageFolder (10 identities held out)")
    losses.add_argument("--seeds", type=int, default=3, help="training seeds per loss")
    losses.add_argument("--ablation", action="store_true", help="also the delta and k ablations of NPT")
    losses.add_argument("--ablation-only", action="store_true", help="only the ablations")
    losses.add_argument("--ablation-seeds", type=int, default=1, help="training seeds per ablation setting")
    losses.add_argument(
        "--scale",
        action="store_true",
        help="10k identities x 10 images (CASIA-like count, width 0.25 at 32 px): NPT as shipped and "
        "exact vs ArcFace, CosFace, Partial-FC ArcFace; the table covers every finished run",
    )
    losses.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="HEAD",
        help="with --scale: train only these heads (npt-semihard, npt-k6-exact, arcface, cosface, "
        "partialfc-arcface), e.g. more seeds for the NPT variants",
    )
    losses.add_argument(
        "--tune-lr",
        nargs="+",
        default=None,
        metavar="LR",
        type=_positive_lr,
        help="with --scale: equal tuning, one seed-0 trial per learning rate for every head, then the other "
        "seeds at each head's best (by TAR@FAR=1e-3), e.g. --tune-lr 0.05 0.1 0.2",
    )
    losses.add_argument("--out", default="runs/bench-losses", help="folder for the tables and per-run results")
    losses.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the budget")
    losses.set_defaults(func=_bench_losses)

    enroll = commands.add_parser("enroll", help="add a person's template (mean embedding) to a gallery .npz")
    enroll.add_argument("--gallery", required=True, help="gallery file (created with --bundle if missing)")
    enroll.add_argument("--name", required=True, help="the person's name in the gallery")
    enroll.add_argument("images", nargs="+", help="photos of this person (aligned crops with --no-align)")
    _add_device_options(enroll)
    enroll.set_defaults(func=_enroll)

    verify = commands.add_parser(
        "verify",
        help="1:1 — two images (--bundle), or one image vs --gallery --name; exit 0 match, 1 no match, 2 error",
    )
    verify.add_argument("--gallery", help="gallery file (nptface enroll) to verify one image against --name")
    verify.add_argument("--name", help="the claimed person (with --gallery)")
    verify.add_argument("images", nargs="+", help="IMG_A IMG_B, or IMG with --gallery --name")
    _add_device_options(verify)
    _add_decision_options(verify)
    verify.set_defaults(func=_verify)

    identify = commands.add_parser(
        "identify", help="1:N — the top matches of an image in a gallery; exit 0 if one matches, 1 if none, 2 error"
    )
    identify.add_argument("--gallery", required=True, help="gallery file (nptface enroll)")
    identify.add_argument("--top", type=int, default=5, help="how many best matches to list")
    identify.add_argument("image", help="a photo of the face to identify (an aligned crop with --no-align)")
    identify.add_argument(
        "--all-faces",
        action="store_true",
        help="identify every face the detector finds (default: the largest); exit 0 if any face matches",
    )
    _add_device_options(identify)
    _add_decision_options(identify)
    identify.set_defaults(func=_identify)

    calibrate = commands.add_parser(
        "calibrate",
        help="thresholds from a labelled folder of your own faces, added to the bundle as an operating point",
    )
    calibrate.add_argument("--data", required=True, help="ImageFolder: one sub-folder of face images per person")
    calibrate.add_argument("--name", help="the operating point's name (default: the --data folder's name)")
    calibrate.add_argument("--fars", help="comma-separated FARs to calibrate (default: those the bundle carries)")
    calibrate.add_argument("--overwrite", action="store_true", help="replace an operating point of the same name")
    _add_device_options(calibrate, bundle_required=True, align_default=False)  # a folder of ready crops
    calibrate.set_defaults(func=_calibrate)

    demo = commands.add_parser("demo", help="the on-device web demo").add_subparsers(dest="demo_command", required=True)
    serve = demo.add_parser("serve", help="serve the page and a bundle's files; the browser runs the model")
    serve.add_argument("--bundle", required=True, help="a bundle folder (nptface export)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind; the default serves this machine only")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    serve.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate (made once, then reused; its fingerprint is printed): "
        "phones need HTTPS for the camera",
    )
    serve.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain) ...")
    serve.add_argument("--tls-key", help="... and this PEM private key")
    serve.add_argument(
        "--tls-dir",
        help="folder for the --tls certificate and key (default: $XDG_CACHE_HOME/nptface or ~/.cache/nptface)",
    )
    serve.set_defaults(func=_demo_serve)
    return _finish(parser)


def main(argv: Sequence[str] | None = None) -> int:
    prefer_passive_waiting()  # before any command imports torch, which starts OpenMP
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        for module in IMPORTED_FIRST.get(args.command, ()):
            importlib.import_module(module)
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"nptface: error: {error}", file=sys.stderr)
        return ERROR
    except ModuleNotFoundError as error:
        if (error.name or "nptface").partition(".")[0] == "nptface":
            raise
        print(f"nptface: error: {_needs_extra(args.command, error.name)}", file=sys.stderr)
        return ERROR
    except Exception:
        if args.command not in DECISION_COMMANDS:
            raise
        # A crash must not read as "no match" (Python exits 1 on an uncaught exception).
        traceback.print_exc()
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
