"""Render a benchmark result document (``results.json``) as Markdown (``results.md``)."""

from __future__ import annotations

import math
from typing import Any

from napari_invert.bench.machine import format_bytes

__all__ = ["format_seconds", "render_markdown"]


def format_seconds(s: float | None) -> str:
    """Human-readable duration: ``0.0123 -> '12.3 ms'``, ``75 -> '1.2 min'``."""
    if s is None or not isinstance(s, (int, float)) or not math.isfinite(s):
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def _diff(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1e}"


def _runs(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    if stats.get("extrapolated"):
        return f"extrapolated from {stats.get('from_pairs')} pair(s)"
    text = f"median of {stats.get('repeats')} (warm-up {stats.get('warmup')})"
    if stats.get("note"):
        text += f"; {stats['note']}"
    return text


def _med(stats: dict[str, Any] | None, star: bool = False) -> str:
    if not stats:
        return "n/a"
    text = format_seconds(stats.get("median_s"))
    return text + ("*" if star and stats.get("extrapolated") else "")


def _threads(n: int | None) -> str:
    return f"{n} torch thread{'' if n == 1 else 's'}"


def _shape(shape: list[int] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "?"


def _machine(m: dict[str, Any], load_start: Any, load_end: Any) -> list[str]:
    v = m.get("versions", {})
    gpu = m.get("gpu")
    gpu_text = (
        f"{gpu['name']} ({format_bytes(gpu.get('memory_bytes'))}, CUDA {gpu.get('cuda')})"
        if gpu
        else ("none used" + (f" (available: {', '.join(m['gpu_names'])})" if m.get("gpu_names") else ""))
    )
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    pools = ", ".join(f"{p.get('internal_api')} {p.get('num_threads')}" for p in m.get("thread_pools") or [])
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {m.get('cpu_model')} |",
        f"| cores | {m.get('usable_cores')} usable of {m.get('logical_cpus')} logical |",
        f"| torch threads | {m.get('torch_threads')} |",
        f"| BLAS / OpenMP threads | {pools or 'n/a'} |",
        f"| RAM | {format_bytes(m.get('ram_bytes'))} |",
        f"| GPU | {gpu_text} |",
        f"| platform | {m.get('platform')} |",
        f"| versions | {versions} |",
        f"| load average (1/5/15 min) | start {load_start}, end {load_end} |",
    ]


def _volume_label(case: dict[str, Any]) -> str:
    limits = case.get("threads") or {}
    n = limits.get("torch_threads")
    text = f"{_shape(case['shape'])} {case['source']}"
    if n is not None:
        text += f", {_threads(n)}" + (" + 1 BLAS thread" if limits.get("blas_limited") else "")
    return text


def _ssim_rows(case: dict[str, Any]) -> list[str]:
    vol = _volume_label(case)
    p = case["pair"]
    rows = [
        f"| {vol} | 1 pair, `ssim_windowed` (float64) | {_med(p['ours_windowed'])} | {_med(p['skimage'])} "
        f"| {_med(p['monai'])} | {_ratio(p['speedup_windowed_vs_skimage'])} "
        f"| {_ratio(p['speedup_windowed_vs_monai'])} | {_runs(p['ours_windowed'])} |",
        f"| {vol} | 1 pair, `ssim_matrix` 1x1 (float32) | {_med(p['ours_matrix_1x1'])} "
        f"| {_med(p['skimage'])} "
        f"| {_med(p['monai'])} | {_ratio(p['speedup_matrix_1x1_vs_skimage'])} "
        f"| {_ratio(p['speedup_matrix_1x1_vs_monai'])} | {_runs(p['ours_matrix_1x1'])} |",
    ]
    for mx in case["matrices"]:
        rows.append(
            f"| {vol} | {mx['n']} x {mx['m']} matrix, `ssim_matrix` | {_med(mx['ours'])} "
            f"| {_med(mx['skimage_loop'], True)} | {_med(mx['monai_loop'], True)} "
            f"| {_ratio(mx['speedup_vs_skimage'])} | {_ratio(mx['speedup_vs_monai'])} "
            f"| ours: {_runs(mx['ours'])}; "
            f"references: {_runs(mx['skimage_loop'])} |"
        )
    return rows


def _corr_rows(case: dict[str, Any]) -> list[str]:
    vol = _volume_label(case)
    p = case["pair"]
    rows = [
        f"| {vol} | 1 pair, `pearson_correlation` | {_med(p['ours_pair'])} | {_med(p['numpy'])} "
        f"| {_ratio(p['speedup_pair_vs_numpy'])} | {_runs(p['ours_pair'])} |"
    ]
    for mx in case["matrices"]:
        rows.append(
            f"| {vol} | {mx['n']} x {mx['m']} matrix, `correlation_matrix` | {_med(mx['ours'])} "
            f"| {_med(mx['numpy_loop'], True)} | {_ratio(mx['speedup_vs_numpy'])} "
            f"| ours: {_runs(mx['ours'])}; "
            f"NumPy: {_runs(mx['numpy_loop'])} |"
        )
    return rows


def _errors(section: list[dict[str, Any]] | dict[str, Any] | None, what: str) -> list[str]:
    if not section:
        return []
    items = section if isinstance(section, list) else [section]
    return [f"- {what}: **error** {e['error']}" for e in items if isinstance(e, dict) and e.get("error")]


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of one benchmark run (tables + notes)."""
    cases = doc.get("cases", {})
    out: list[str] = [
        f"# napari-invert benchmarks — {doc.get('mode')} mode, device {doc.get('device')}",
        "",
        f"Run {doc.get('created')}, {format_seconds(doc.get('seconds'))} in all. "
        "Figures are medians of repeated runs after a warm-up; a speed-up is "
        "*reference time / our time* from the same run (> 1: ours faster). "
        "Entries marked * are **extrapolated**: the looped reference was timed on a few pairs "
        "and multiplied by the number of pairs.",
        "",
        "## Machine",
        "",
        *_machine(doc.get("machine", {}), doc.get("load_average_start"), doc.get("load_average_end")),
        "",
    ]
    ssim = [c for c in cases.get("ssim", []) if not c.get("error")]
    if ssim:
        out += [
            "## Windowed SSIM (Gaussian sigma 1.5, 11 taps, unmasked interior mean)",
            "",
            "| volumes | what | ours | skimage loop | MONAI loop | speed-up vs skimage "
            "| speed-up vs MONAI | runs |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for case in ssim:
            out += _ssim_rows(case)
        out += [
            "",
            "Agreement on the timed pairs (max |difference|):",
            "",
            "| volumes | pairs | ours `ssim_windowed` vs skimage | ours `ssim_matrix` vs skimage "
            "| MONAI vs skimage | ours vs MONAI |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for case in ssim:
            a = case["agreement"]
            out.append(
                f"| {_volume_label(case)} | {a['pairs_checked']} "
                f"| {_diff(a['ours_windowed_vs_skimage'])} | {_diff(a['ours_matrix_vs_skimage'])} "
                f"| {_diff(a['monai_vs_skimage'])} | {_diff(a['ours_windowed_vs_monai'])} |"
            )
        out.append("")
    corr = [c for c in cases.get("correlation", []) if not c.get("error")]
    if corr:
        out += [
            "## Pearson correlation inside the candidate's brain mask",
            "",
            "| volumes | what | ours | NumPy loop (`np.corrcoef`) | speed-up | runs |",
            "|---|---|---:|---:|---:|---|",
        ]
        for case in corr:
            out += _corr_rows(case)
        out += ["", "Agreement (max |difference| ours vs NumPy on the timed pairs): "]
        out[-1] += "; ".join(
            f"{_volume_label(c)}: pair {_diff(c['agreement']['ours_pair_vs_numpy'])}, "
            f"matrix {_diff(c['agreement']['ours_matrix_vs_numpy'])}"
            for c in corr
        )
        out.append("")
    training = cases.get("training") or []
    if training:
        out += [
            "## Training steps",
            "",
            "| config grid | shape | network | tap | batch | images | threads | s / step "
            "| peak memory increment | set-up (tap cache) | runs |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for e in training:
            if e.get("error"):
                continue
            mem = e.get("memory", {})
            kind = "decoder" if e["kind"] == "decoder" else "segmenter"
            out.append(
                f"| {e['grid']} | {_shape(e['shape'])} | {e['arch']} {kind} | {e.get('tap') or '-'} "
                f"| {e['batch_size']} | {e['n_images']} | {e.get('torch_threads')} "
                f"| {_med(e.get('seconds_per_step'))} "
                f"| {format_bytes(mem.get('peak_increment_bytes'))} ({mem.get('method')}) "
                f"| {format_seconds(e.get('setup_s')) if e['kind'] == 'decoder' else '-'} "
                f"| {_runs(e.get('seconds_per_step'))} |"
            )
        grids = cases.get("grids") or []
        if grids:
            out += [
                "",
                "Grids: "
                + "; ".join(
                    f"**{g['name']}** {_shape(g['shape'])}, {g['n_classes']} classes ({g['source']})"
                    for g in grids
                ),
            ]
        out.append("")
    reg = cases.get("registration")
    if reg and not reg.get("error"):
        proj = reg["projection"]
        w = proj["workers"]
        n, m = proj["matrix"]
        out += [
            f"## Registration (ANTs affine MI + SyN CC, {_shape(reg['shape'])} at {reg['voxel_mm']} mm, "
            f"{reg.get('itk_threads') or 'default'} ITK thread(s))",
            "",
            f"Projection for `{proj['config']}`: {proj['experiments']} registered experiments "
            f"(taps: {proj.get('registered_taps')}), {n} x {m} "
            f"candidates, sample size {proj['sample_size']}, {w} workers (perfect scaling assumed: a "
            "lower bound on a shared machine).",
            "",
            f"| preset | s / pair | runs | full {n}x{m}, one experiment | full, whole study "
            f"({proj['pairs_per_study']['full']} pairs) | sample, one experiment | sample, whole study "
            f"({proj['pairs_per_study']['sample']} pairs) |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for preset, r in reg["presets"].items():
            pj = proj["projected"][preset]
            out.append(
                f"| {preset} | {_med(r['seconds_per_pair'])} | {_runs(r['seconds_per_pair'])} "
                f"| {format_seconds(pj['full']['per_experiment_s'])} "
                f"| {format_seconds(pj['full']['per_study_s'])} "
                f"| {format_seconds(pj['sample']['per_experiment_s'])} "
                f"| {format_seconds(pj['sample']['per_study_s'])} |"
            )
        out.append("")
    out += _cpu_speed_rows(cases.get("cpu_speed") or [])
    e2e = cases.get("end_to_end") or []
    if e2e:
        out += [
            "## End to end (read from study folders, not run by `bench`)",
            "",
            "| config | command | study wall time (last run) | steps (sum over parallel jobs) "
            "| evaluation | status |",
            "|---|---|---:|---:|---:|---|",
        ]
        for e in e2e:
            status = str(e.get("status"))
            if e.get("steps_before_last_run"):
                status += (
                    f"; the last run resumed: {len(e['steps_before_last_run'])} step(s) "
                    f"({format_seconds(e.get('seconds_before_last_run'))}) were done by an earlier run"
                )
            if e.get("path"):
                status += f" (`{e['path']}`)"
            out.append(
                f"| {e.get('config')} | {('`' + e['command'] + '`') if e.get('command') else '-'} "
                f"| {format_seconds(e.get('last_run_seconds'))} | {format_seconds(e.get('steps_total_s'))} "
                f"| {format_seconds(e.get('evaluation_seconds'))} | {status} |"
            )
        out.append("")
    notes = list(doc.get("notes", []))
    for key, what in (
        ("ssim", "SSIM"),
        ("correlation", "correlation"),
        ("training", "training"),
        ("registration", "registration"),
        ("cpu_speed", "CPU speed"),
    ):
        notes += _errors(cases.get(key), what)
    if notes:
        out += ["## Notes", "", *[n if n.startswith("- ") else f"- {n}" for n in notes], ""]
    return "\n".join(out)


def _cpu_speed_rows(entries: list[dict[str, Any]]) -> list[str]:
    """The CPU training-step variants table (same-run ratios against ``contiguous``)."""
    ok = [e for e in entries if not e.get("error") and e.get("variants")]
    if not ok:
        return []
    out = [
        "## CPU training step: memory format, oneDNN, fused Adam, bf16, torch.compile",
        "",
        "Segmenter step (forward, Dice + CE, backward, Adam), one torch thread, variants timed "
        "round-robin in one run; ratio = `contiguous` seconds / variant seconds (> 1: faster).",
        "",
        "| grid | network | variant | s / step | ratio | note |",
        "|---|---|---|---:|---:|---|",
    ]
    for e in ok:
        for name, v in e["variants"].items():
            note = v.get("error", "")
            if v.get("bf16_logits_relative_error") is not None:
                note = f"bf16 logits rel. error {v['bf16_logits_relative_error']:.1e}"
            if "compile" in name and v.get("warmup_s") is not None:
                note = f"compile + warm-up {format_seconds(v['warmup_s'])}"
            out.append(
                f"| {e['grid']} {_shape(e.get('shape'))} | {e['arch']} | `{name}` "
                f"| {format_seconds(v.get('seconds_per_step'))} | {_ratio(v.get('ratio'))} | {note} |"
            )
    out.append("")
    return out
