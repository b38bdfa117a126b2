"""The ``napari-invert`` command line.

Sub-commands::

    napari-invert data info PATH        summary of a cohort folder (and its problems)
    napari-invert demo [--out DIR]      demo study on the embedded cohort + HTML report
    napari-invert study CONFIG --out DIR [--device cpu|cuda] [--folds 0 1 ...]
    napari-invert evaluate STUDY_DIR [--metrics ...] [--deformation full|sample|off] [--backend local|ray]
    napari-invert study-info STUDY_DIR  convergence table of the victims and decoders
    napari-invert bench [--quick] [--device ...]
    napari-invert defend CONFIG --out DIR [--folds 0 ...]   defended victims (config ``defences:``)
    napari-invert frontier STUDY... [--out DIR]             privacy-utility frontier of the defences
    napari-invert view STUDY_DIR        open the study in napari (needs the [napari] extra)
    napari-invert taps MODEL_CONFIG     layers (and roles) of your own model an attacker could read
    napari-invert audit CONFIG --out DIR   attack your own model on your cohort, then evaluate

Errors meant for the user (bad files, bad configs) are printed as one line on stderr and
exit with status 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_invert import __version__
from napari_invert.errors import ConfigError, NapariInvertError


def _cmd_data_info(args: argparse.Namespace) -> int:
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.summary import cohort_summary, format_cohort_summary

    cohort = Cohort.from_path(Path(args.path), kind=args.kind)
    summary = cohort_summary(cohort, full_check=not args.headers_only)
    print(format_cohort_summary(summary))
    problems = summary.get("problems") or []
    for problem in problems:
        text = problem if isinstance(problem, str) else f"{problem['path']}: {problem['problem']}"
        print(f"napari-invert: error: {text}", file=sys.stderr)
    return 2 if problems else 0


def study_jobs(args: argparse.Namespace, config) -> int:
    """Processes of ``napari-invert study``: ``--jobs`` when typed, else the config's ``jobs``
    (``--variants`` / ``--architectures`` select victims, which run in parallel too)."""
    return int(args.jobs) if args.jobs is not None else int(config.jobs)


def _cmd_study(args: argparse.Namespace) -> int:
    from napari_invert.config import load_config
    from napari_invert.study.runner import StudyRunner

    config = load_config(args.config)
    jobs = study_jobs(args, config)
    backend = args.backend or config.execution.backend
    if jobs > 1 or backend != "local":
        from napari_invert.study.runner import run_study_parallel

        folder = run_study_parallel(
            config,
            args.out,
            jobs,
            device=args.device,
            folds=args.folds,
            progress=not args.no_progress,
            backend=backend,
            address=args.address,
            variants=args.variants,
            architectures=args.architectures,
        )
        print(f"study finished: {folder.root}")
        _report_victims(folder.root)
        if args.evaluate:
            return _evaluate(
                folder.root, None, None, args.device, not args.no_progress, backend, args.address
            )
        return 0
    runner = StudyRunner(
        config,
        args.out,
        device=args.device,
        folds=args.folds,
        variants=args.variants,
        architectures=args.architectures,
        progress=not args.no_progress,
    )
    folder = runner.run()
    print(f"study finished: {folder.root}")
    _report_victims(folder.root)
    if args.evaluate:
        return _evaluate(folder.root, None, None, args.device, not args.no_progress, backend, args.address)
    return 0


def _report_victims(study: Path) -> None:
    """Print whether the victims segment (a warning on stderr when one does not)."""
    from napari_invert.study.convergence import format_victim_check, victim_segmentation_check

    check = victim_segmentation_check(study)
    print(format_victim_check(check), file=sys.stdout if check["ok"] else sys.stderr)


def _cmd_study_info(args: argparse.Namespace) -> int:
    from napari_invert.errors import DataError
    from napari_invert.study.convergence import (
        format_convergence_table,
        format_victim_check,
        summarise_convergence,
        victim_segmentation_check,
    )
    from napari_invert.study.layout import StudyFolder

    folder = StudyFolder(Path(args.study))
    if not folder.is_study():
        raise DataError(folder.root, "not a study folder (config.yaml, splits.json, cohort.json missing)")
    rows = summarise_convergence(folder)
    if not rows:
        print(f"{folder.root}: no convergence records yet (studies run before this version have none)")
        return 0
    print(format_convergence_table(rows))
    check = victim_segmentation_check(folder)
    print(format_victim_check(check))
    return 0 if check["ok"] else 1


def _evaluate(study: Path, metrics, deformation, device, progress: bool, backend=None, address=None) -> int:
    from napari_invert.report import evaluate_study

    summary = evaluate_study(
        study,
        metrics=metrics,
        deformation=deformation,
        device=device,
        progress=progress,
        backend=backend,
        address=address,
    )
    for line in summary.verdicts:
        print(f"- {line}")
    print(f"report: {summary.report_path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _evaluate(
        Path(args.study),
        args.metrics,
        args.deformation,
        args.device,
        not args.no_progress,
        args.backend,
        args.address,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_invert.study.presets import demo_config
    from napari_invert.study.runner import StudyRunner

    config = demo_config(n_subjects=args.subjects, full_head=args.full_head)
    out = Path(args.out)
    print(f"napari-invert demo: {config.cohort.n_subjects} synthetic subjects, study folder {out}")
    jobs = args.jobs if args.jobs is not None else config.jobs
    if jobs > 1:
        from napari_invert.study.runner import run_study_parallel

        folder = run_study_parallel(config, out, jobs, device=args.device, progress=not args.no_progress)
    else:
        folder = StudyRunner(config, out, device=args.device, progress=not args.no_progress).run()
    _report_victims(folder.root)
    return _evaluate(folder.root, None, None, args.device, not args.no_progress)


def _cmd_bench(args: argparse.Namespace) -> int:
    from napari_invert.bench import run_benchmarks

    studies = [Path(p) for p in args.study] if args.study else None
    run_benchmarks(quick=args.quick, device=args.device, out_dir=Path(args.out), studies=studies)
    return 0


def _cmd_defend(args: argparse.Namespace) -> int:
    from napari_invert.config import load_config
    from napari_invert.study.defended import run_defended_study

    config = load_config(args.config)
    if not config.defences:
        raise ConfigError(f"{args.config}: defences: the list is empty; nothing to defend")
    jobs = args.jobs if args.jobs is not None else config.jobs
    kw = {"architectures": args.architectures, "defences": args.only, "progress": not args.no_progress}
    if jobs > 1 or (args.backend or config.execution.backend) != "local":
        from napari_invert.study.defended import run_defended_parallel

        paths = run_defended_parallel(
            config,
            args.out,
            jobs,
            device=args.device,
            folds=args.folds,
            backend=args.backend,
            address=args.address,
            **kw,
        )
    else:
        paths = run_defended_study(config, args.out, device=args.device, folds=args.folds, **kw)
    print(f"defended experiments finished: {len(paths)} in {Path(args.out) / 'defences'}")
    if args.frontier:
        return _frontier([Path(args.out)], None)
    return 0


def _frontier(studies: list[Path], out: Path | None) -> int:
    from napari_invert.report.frontier import write_frontier

    written = write_frontier(studies, out)
    for line in written["verdict"]:
        print(line)
    print(f"frontier: {written['files']['frontier.md'].parent}")
    return 0


def _cmd_frontier(args: argparse.Namespace) -> int:
    return _frontier([Path(s) for s in args.study], Path(args.out) if args.out else None)


def _cmd_view(args: argparse.Namespace) -> int:  # pragma: no cover - opens a window
    try:
        import napari
    except ImportError:
        print("napari is not installed: pip install 'napari-invert[napari]'", file=sys.stderr)
        return 2
    from napari_invert.widgets._launch import open_study_in_viewer

    viewer = napari.Viewer(title=f"napari-invert: {args.study}")
    open_study_in_viewer(viewer, Path(args.study))
    napari.run()
    return 0


def _cmd_taps(args: argparse.Namespace) -> int:
    import json

    from napari_invert.audit_config import load_model_config
    from napari_invert.models.sources import load_model_source

    config = load_model_config(args.config)
    if args.input_size:
        config = config.model_copy(update={"input_size": tuple(args.input_size)})
    adapter = load_model_source(config)
    discovery = adapter.discovery
    if args.json:
        print(json.dumps(discovery.to_dict(), indent=1))
    else:
        print(discovery.format(all_layers=args.all))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from napari_invert.audit import AuditRunner
    from napari_invert.audit_config import load_audit_config

    config = load_audit_config(args.config)
    folder = AuditRunner(config, args.out, device=args.device, progress=not args.no_progress).run()
    print(f"audit finished: {folder.root}")
    if args.no_evaluate:
        return 0
    return _evaluate(folder.root, None, None, args.device, not args.no_progress)


def _add_backend(parser: argparse.ArgumentParser, where: str) -> None:
    """``--backend {local,ray}`` and ``--address``; ``where``: what runs where, for the help."""
    parser.add_argument(
        "--backend",
        default=None,
        choices=["local", "ray"],
        help=f"where {where} (default: the config's execution.backend)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster: auto or HOST:PORT (default: config / a local Ray)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="napari-invert",
        description=(
            "Audit 3D segmentation networks for privacy leakage: feature inversion (what an attacker "
            "reconstructs from the encoder's outputs) and training-data leakage (membership inference)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-invert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect cohorts")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="summarise a cohort folder and list its problems")
    info.add_argument("path", help="cohort folder (LPBA40, IXI, generic folder) or manifest file")
    info.add_argument("--kind", default="auto", choices=["auto", "lpba40", "ixi", "folder", "manifest"])
    info.add_argument(
        "--headers-only",
        action="store_true",
        help="read NIfTI headers only (fast; does not detect truncated or NaN voxel data)",
    )
    info.set_defaults(func=_cmd_data_info)

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--device", default=None, choices=["auto", "cpu", "cuda"], help="default: config / auto"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    study = sub.add_parser("study", help="run (or resume) a k-fold inversion study")
    study.add_argument("config", help="YAML study config (see sample_configs/)")
    study.add_argument("--out", required=True, help="study folder (created; rerun to resume)")
    study.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds")
    study.add_argument("--variants", nargs="+", default=None, choices=["skull_stripped", "full_head"])
    study.add_argument("--architectures", nargs="+", default=None, choices=["unet", "segnet"])
    study.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="run victims in N parallel processes, one torch thread each (default: config jobs)",
    )
    _add_backend(study, "victims run: local processes (--jobs) or Ray tasks")
    study.add_argument("--evaluate", action="store_true", help="evaluate and write the report afterwards")
    add_common(study)
    study.set_defaults(func=_cmd_study)

    ev = sub.add_parser("evaluate", help="metrics, re-identification, tables, figures, report.html")
    ev.add_argument("study", help="study folder")
    ev.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        choices=["correlation", "ssim", "ssim_global", "deformation", "dice"],
    )
    ev.add_argument(
        "--deformation",
        default=None,
        choices=["full", "sample", "off"],
        help="full: register every reconstruction x candidate pair (ranks among all N, the paper's "
        "protocol); sample: the true original + evaluation.deformation.sample_size = k others "
        "(ranks among 1 + k, chance 1/(k+1): not comparable with the paper's 24/40); "
        "default: the config. The ANTs preset is evaluation.deformation.preset: 'fast' does NO SyN "
        "iteration at the finest (full-resolution) level (40x20x0), 'paper' does 100x70x50x20",
    )
    _add_backend(ev, "similarity row blocks and registrations run: this machine or Ray tasks")
    add_common(ev)
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="run the demo study on the embedded synthetic cohort")
    demo.add_argument("--out", default="napari-invert-demo", help="study folder (default: %(default)s)")
    demo.add_argument("--subjects", type=int, default=None, help="number of demo subjects (default 40)")
    demo.add_argument("--jobs", type=int, default=None, help="parallel fold processes (default: 2)")
    demo.add_argument(
        "--full-head",
        action="store_true",
        help="also the full-head variant (skull-stripped vs full-head, the paper's 2nd axis; twice the time)",
    )
    add_common(demo)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="speed and memory benchmarks (writes JSON + Markdown)")
    bench.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    bench.add_argument("--out", default="bench-results", help="output folder (default: %(default)s)")
    bench.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    bench.add_argument(
        "--study",
        nargs="+",
        default=None,
        help="finished study folders whose end-to-end wall times (manifest.json) are reported",
    )
    bench.set_defaults(func=_cmd_bench)

    study_info = sub.add_parser(
        "study-info",
        help="convergence of a study's victims and decoders; warns when a victim does not segment",
    )
    study_info.add_argument("study", help="study folder")
    study_info.set_defaults(func=_cmd_study_info)

    taps = sub.add_parser("taps", help="list the layers of your own model an attacker could read")
    taps.add_argument("config", help="YAML with a 'model:' block (an audit config, see sample_configs/)")
    taps.add_argument("--input-size", type=int, nargs=3, default=None, help="dummy input X Y Z")
    taps.add_argument("--all", action="store_true", help="also layers inside blocks and decoder layers")
    taps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    taps.set_defaults(func=_cmd_taps)

    audit = sub.add_parser("audit", help="attack your own segmenter on your cohort (writes a study folder)")
    audit.add_argument("config", help="YAML audit config (see sample_configs/own_model_monai.yaml)")
    audit.add_argument("--out", required=True, help="study folder (created; rerun to resume)")
    audit.add_argument("--no-evaluate", action="store_true", help="skip the evaluation and report")
    add_common(audit)
    audit.set_defaults(func=_cmd_audit)

    defend = sub.add_parser("defend", help="train and attack the defended victims of a config's defences")
    defend.add_argument("config", help="YAML study config with a defences: list")
    defend.add_argument("--out", required=True, help="study folder (shared with 'study'; rerun to resume)")
    defend.add_argument("--folds", type=int, nargs="+", default=None, help="only these folds")
    defend.add_argument("--architectures", nargs="+", default=None, choices=["unet", "segnet"])
    defend.add_argument(
        "--only", nargs="+", default=None, help="only these defences (slugs: none noise-0.5 ...)"
    )
    defend.add_argument("--jobs", type=int, default=None, help="parallel fold processes (default: config)")
    _add_backend(defend, "the folds run: local processes (--jobs) or Ray tasks")
    defend.add_argument("--frontier", action="store_true", help="write the frontier afterwards")
    add_common(defend)
    defend.set_defaults(func=_cmd_defend)

    frontier = sub.add_parser("frontier", help="privacy-utility frontier of defended victims (table, figure)")
    frontier.add_argument("study", nargs="+", help="study folder(s) with defended experiments")
    frontier.add_argument("--out", default=None, help="output folder (default: STUDY/evaluation/frontier)")
    frontier.set_defaults(func=_cmd_frontier)

    view = sub.add_parser("view", help="open a study folder in napari")
    view.add_argument("study", help="study folder")
    view.set_defaults(func=_cmd_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-invert`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except NapariInvertError as exc:
        print(f"napari-invert: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-invert: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
