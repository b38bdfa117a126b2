"""The ``napari-invert`` command line.

Sub-commands::

    napari-invert data info PATH        summary of a cohort folder (and its problems)
    napari-invert demo [--out DIR]      demo study on the embedded cohort + HTML report
    napari-invert study CONFIG --out DIR [--device cpu|cuda] [--folds 0 1 ...]
    napari-invert evaluate STUDY_DIR [--metrics ...] [--deformation full|sample|off]
    napari-invert bench [--quick] [--device ...]
    napari-invert view STUDY_DIR        open the study in napari (needs the [napari] extra)

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
from napari_invert.errors import NapariInvertError


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


def _cmd_study(args: argparse.Namespace) -> int:
    from napari_invert.config import load_config
    from napari_invert.study.runner import StudyRunner

    config = load_config(args.config)
    jobs = args.jobs if args.jobs is not None else config.jobs
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
        if args.evaluate:
            return _evaluate(folder.root, None, None, args.device, not args.no_progress)
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
    if args.evaluate:
        return _evaluate(folder.root, None, None, args.device, not args.no_progress)
    return 0


def _evaluate(study: Path, metrics, deformation, device, progress: bool) -> int:
    from napari_invert.report import evaluate_study

    summary = evaluate_study(
        study, metrics=metrics, deformation=deformation, device=device, progress=progress
    )
    report = getattr(summary, "report_path", Path(study) / "evaluation" / "report.html")
    print(f"report: {report}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _evaluate(Path(args.study), args.metrics, args.deformation, args.device, not args.no_progress)


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_invert.study.presets import demo_config
    from napari_invert.study.runner import StudyRunner

    config = demo_config(n_subjects=args.subjects)
    out = Path(args.out)
    print(f"napari-invert demo: {config.cohort.n_subjects} synthetic subjects, study folder {out}")
    jobs = args.jobs if args.jobs is not None else config.jobs
    if jobs > 1:
        from napari_invert.study.runner import run_study_parallel

        folder = run_study_parallel(config, out, jobs, device=args.device, progress=not args.no_progress)
    else:
        folder = StudyRunner(config, out, device=args.device, progress=not args.no_progress).run()
    return _evaluate(folder.root, None, None, args.device, not args.no_progress)


def _cmd_bench(args: argparse.Namespace) -> int:
    from napari_invert.bench import run_benchmarks

    studies = [Path(p) for p in args.study] if args.study else None
    run_benchmarks(quick=args.quick, device=args.device, out_dir=Path(args.out), studies=studies)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="napari-invert",
        description="Audit 3D segmentation networks for model-inversion leakage of their training patients.",
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
    study.add_argument(
        "--backend",
        default=None,
        choices=["local", "ray"],
        help="where victims run: local processes (--jobs) or Ray tasks (default: config execution.backend)",
    )
    study.add_argument(
        "--address", default=None, help="Ray cluster: auto or HOST:PORT (default: config / a local Ray)"
    )
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
    ev.add_argument("--deformation", default=None, choices=["full", "sample", "off"])
    add_common(ev)
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="run the demo study on the embedded synthetic cohort")
    demo.add_argument("--out", default="napari-invert-demo", help="study folder (default: %(default)s)")
    demo.add_argument("--subjects", type=int, default=None, help="number of demo subjects (default 40)")
    demo.add_argument("--jobs", type=int, default=None, help="parallel fold processes (default: 2)")
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
