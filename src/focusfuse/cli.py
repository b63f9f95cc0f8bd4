"""Command line: parses options and calls the library. Errors become one line on stderr."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from .engine.options import MAX_REDUCE, MIN_TILE_SIZE
from .errors import FocusFuseError, UsageError
from .methods import METHOD_NAMES
from .methods.gacn import STRATEGY_NAMES

# Heavy modules (torch, OpenCV, rich) are imported by the commands that need them, so that
# `focusfuse --help` and option errors answer at once.


@functools.cache
def stderr_console():
    """The rich console on stderr for progress bars and summaries (made when a command first needs it)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or torch's CUDA out-of-memory error (checked without importing torch)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


# ------------------------------------------------------------------------------------------ plumbing

def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _warning_printer() -> Callable:
    """A ``warnings.showwarning`` that prints each distinct warning once, in one line."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
        text = _one_line(Warning(str(message)))
        if text not in shown:
            shown.add(text)
            click.echo(f"focusfuse: warning: {text}", err=True)

    return show


def handle_errors(func: Callable) -> Callable:
    """Run a command: library errors and unexpected failures -> one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, debug: bool = False, **kwargs):
        def fail(message: str, code: int) -> NoReturn:
            click.echo(f"focusfuse: {message}", err=True)
            if kwargs.get("as_json"):  # --json: the run's last line on stdout says it failed too
                with contextlib.suppress(OSError):  # a reader gone (Ctrl-C on `... | jq`) must not change the code
                    _json_line("error", message=message, exit_code=code)
            sys.exit(code)

        with warnings.catch_warnings(), _terminate_as_interrupt():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_printer()
            try:
                _silence_decoders()
                return func(*args, **kwargs)
            except Terminated:
                fail("terminated", 143)
            except FocusFuseError as exc:
                if debug:
                    traceback.print_exc()
                flag = f" ({OPTION_FLAGS.get(exc.option, '--' + exc.option.replace('_', '-'))})" if exc.option else ""
                fail(f"error: {_one_line(exc)}{flag}", exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted", 130)
            except Exception as exc:  # anything else is a bug or an unforeseen input: still one line
                if debug:
                    traceback.print_exc()
                if _is_out_of_memory(exc):
                    fail(f"error: out of memory ({_one_line(exc)}); for stack, pair and batch try a lower "
                         "--memory-limit or a smaller --tile-size", 1)
                fail(f"error: {exc.__class__.__name__}: {_one_line(exc)} (run with --debug for details)", 1)

    return wrapper


OPTION_FLAGS = {"n_frames": "--frames", "image_format": "--format"}  # library options whose flag is named otherwise


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``), raised where the command runs: the same clean-up as Ctrl-C (partial outputs
    removed, finished ones kept)."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the length of a command (Python's default
    would end the process at once, leaving partial outputs behind)."""
    import signal

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding application): leave its signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def common_options(func: Callable) -> Callable:
    """--weights, --device, --quiet, --debug shared by the commands that run the network."""
    options = [
        click.option("--weights", metavar="PATH|NAME", default=None,
                     help="Weights file or installed name (default: the weights shipped with focusfuse)."),
        click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                     help="Where the network runs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary."),
        click.option("--debug", is_flag=True, help="Show the traceback of an error."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def frame_progress(quiet: bool):
    """Progress bars on stderr; off with ``quiet`` and when stderr is not a terminal (a log file)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = stderr_console()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[frame]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, disable=quiet or not console.is_terminal, transient=True)


def _load_model(weights: str | None, device: str, method: str = "gacn"):
    """Resolve the device and load the method's weights up front, so their errors come before any work (None for a
    method without weights)."""
    from .backends.select import resolve_device
    from .methods.registry import load_method_weights

    return load_method_weights(method, weights, resolve_device(device))


class OneLineErrorGroup(click.Group):
    """A command group whose option errors (a value out of range, an unknown option) are one stderr line,
    like every other error, instead of click's usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if isinstance(exc, click.UsageError) and exc.ctx else ""
            message = " ".join(exc.format_message().split())
            click.echo(f"focusfuse: error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("focusfuse: interrupted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


# ------------------------------------------------------------------------------------------ commands

@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="focusfuse")
def main() -> None:
    """focusfuse: all-in-focus images from focus-bracketed frames (GACN)."""


def _silence_decoders() -> None:
    """OpenCV's and tifffile's decoders log their own warnings; we report problems ourselves, in one line."""
    import logging

    import cv2

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    cv_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if cv_logging is not None:
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)


ALIGN_CHOICE = click.Choice(["auto", "none", "translation", "affine", "homography"])  # align.MODES (heavy import)
STRATEGY_CHOICE = click.Choice(STRATEGY_NAMES)
METHOD_CHOICE = click.Choice(METHOD_NAMES)
METHOD_HELP = ("gacn: the network (best boundaries on real pairs); wavelet: a classical Laplacian pyramid, no "
               "network, many times faster on a CPU; sesf: SESF-Fuse (whole images only); rpsnn: R-PSNN, "
               "regresses the fused image (no maps; heavy). --reduce is GACN's.")


def _json_line(event: str, **fields) -> None:
    """One machine-readable progress line on stdout (``--json``)."""
    click.echo(json.dumps({"event": event, **fields}, default=str))


def boundary_blend_options() -> list[Callable[[Callable], Callable]]:
    """--boundary-blend and --no-boundary-blend (stacks and pairs)."""
    return [
        click.option("--boundary-blend", default=None, metavar="learned|laplacian|off|WEIGHTS",
                     help="gacn [default: learned]: blend the frames by sharpness within 9 px of the index map's "
                          "edges (fewer seams, stripes and halos; 3 frames or more). learned: weights corrected by "
                          "the shipped blend network, the band then redrawn by its refiner; laplacian: Laplacian "
                          "energy alone; off: GACN's own maps; or blend weights from `focusfuse train --method "
                          "blend` (file or name). Pairs only with weights that carry a pair refiner: "
                          "focusfuse-blend-pairs (closer to the truth at depth edges, lower reference-free scores)."),
        click.option("--no-boundary-blend", "boundary_blend", flag_value="off", help="Same as --boundary-blend off."),
    ]


def with_boundary_blend_options(func: Callable) -> Callable:
    """Decorate a command with the boundary-blend options."""
    for option in reversed(boundary_blend_options()):
        func = option(func)
    return func


def size_options(func: Callable) -> Callable:
    """--tile-size, --reduce, --memory-limit, --workers, --compression and --edge-fill: how images are processed.
    Their values are checked by the library (focusfuse.FusionOptions), once."""
    options = [
        click.option("--tile-size", type=int, default=None,
                     help=f"Process in tiles of this size (0: whole image; at least {MIN_TILE_SIZE}; default: "
                          "chosen from the memory limit)."),
        click.option("--memory-limit", default=None, metavar="SIZE",
                     help="Most memory a run may use, e.g. 4G or 512M (default: half the free memory, at most "
                          "8G of main memory); sets the tile size."),
        click.option("--workers", type=int, default=None,
                     help="Threads that read, align and prepare frames (default: one per core, at most 8)."),
        click.option("--reduce", type=int, default=1, show_default=True,
                     help=f"Run the decision path (most of the network) at N times lower resolution (1 to "
                          f"{MAX_REDUCE}; 2: 1.2-1.8x faster on CPU); features, maps and blend stay at full "
                          "resolution."),
        click.option("--compression", type=click.Choice(["none", "zlib"]), default="none", show_default=True,
                     help="Compression of TIFF outputs."),
        click.option("--edge-fill/--no-edge-fill", default=True, show_default=True,
                     help="Find constant bands along frame edges (fill left by registration in other tools): "
                          "the network sees image pixels there, and a band is never taken where another frame "
                          "has pixels."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Fused image.")
@click.option("--decision-map", type=click.Path(path_type=Path), default=None,
              help="Write the final decision map (1 = from A) as a 16-bit PNG/TIFF.")
@click.option("--align", type=ALIGN_CHOICE, default="none", show_default=True, help="Register B onto A first.")
@click.option("--method", type=METHOD_CHOICE, default="gacn", show_default=True, help=METHOD_HELP)
@with_boundary_blend_options
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@size_options
@common_options
@handle_errors
def pair(image_a: Path, image_b: Path, output: Path, decision_map: Path | None, align: str, method: str,
         boundary_blend: str | None, tile_size: int | None,
         memory_limit: str | None, workers: int | None, reduce: int, compression: str, edge_fill: bool,
         overwrite: bool, weights: str | None, device: str, quiet: bool) -> None:
    """Fuse two images IMAGE_A and IMAGE_B into OUTPUT."""
    from .engine.options import FusionOptions
    from .jobs.pair_job import run_pair

    options = FusionOptions(method=method, align=align, tile_size=tile_size, reduce=reduce, edge_fill=edge_fill,
                            memory_limit=memory_limit, workers=workers, boundary_blend=boundary_blend)
    for path in (image_a, image_b):
        if not path.is_file():
            raise UsageError(f"{path}: " + ("a folder, not an image" if path.is_dir() else "no such file"))
    model = _load_model(weights, device, method)
    report = run_pair(image_a, image_b, output, model, decision_map=decision_map, options=options,
                      compression=None if compression == "none" else compression, overwrite=overwrite,
                      device=device)
    if not quiet:
        stderr_console().print(f"fused {report['width']}x{report['height']} pair in {report['seconds']:.1f} s "
                               f"-> {output}")


def stack_options(func: Callable) -> Callable:
    """Options shared by ``stack`` and ``batch``."""
    options = [
        click.option("--method", type=METHOD_CHOICE, default="gacn", show_default=True, help=METHOD_HELP),
        click.option("--strategy", type=STRATEGY_CHOICE, default=None,
                     help="gacn and sesf [default: calibrated]. calibrated: running champion, N feature passes "
                          "(best); calibration: GACN's Eq. 18; serial: pairwise, 2(N-1) feature passes."),
        click.option("--align", type=ALIGN_CHOICE, default="auto", show_default=True,
                     help="Register frames onto the middle one (auto: phase correlation + ECC, affine)."),
        click.option("--crop", is_flag=True, help="Keep only the area valid in all aligned frames."),
        *boundary_blend_options(),
        click.option("--depth-smooth", type=int, default=0, show_default=True,
                     help="Median-filter radius for the index/depth map (0 to 32)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def cluster_options(tasks: str, paths: str) -> Callable[[Callable], Callable]:
    """--dask-workers and --scheduler: ``tasks`` run on a Dask cluster's workers (the dask extra)."""
    def decorate(func: Callable) -> Callable:
        func = click.option("--scheduler", default=None, metavar="ADDRESS",
                            help=f"Fuse {tasks} on the workers of an existing Dask cluster (e.g. tcp://host:8786); "
                                 f"they must see {paths} at the same paths.")(func)
        return click.option("--dask-workers", type=int, default=None, metavar="N",
                            help=f"Fuse {tasks} as tasks on a local Dask cluster of N worker processes (needs the "
                                 "dask extra: pip install 'focusfuse[dask]').")(func)
    return decorate


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Fused image (required "
              "unless --align-only).")
@click.option("--index-map", "--depth-map", "index_map", type=click.Path(path_type=Path), default=None,
              help="Which frame each pixel came from: 0-based index in natural file order, raw 16-bit PNG/TIFF.")
@click.option("--depth-preview", type=click.Path(path_type=Path), default=None,
              help="Colourised index map with a colour bar (PNG).")
@click.option("--height-map", type=click.Path(path_type=Path), default=None,
              help="Float32 TIFF of heights in physical units (needs --z-step or TIFF z spacing).")
@click.option("--z-step", type=float, default=None, help="Focus step between frames, for --height-map.")
@click.option("--z-unit", default="", help="Unit of --z-step, for the preview's labels (e.g. um).")
@click.option("--align-only", type=click.Path(path_type=Path), default=None,
              help="Only align: write the registered frames into this folder, no fusion.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable progress and report on stdout.")
@cluster_options("the tiles of a tiled run (after alignment and the whole-frame statistics, here)",
                 "the frames")
@stack_options
@size_options
@common_options
@handle_errors
def stack(inputs: tuple[Path, ...], output: Path, index_map: Path | None, depth_preview: Path | None,
          height_map: Path | None, z_step: float | None, z_unit: str, align_only: Path | None, as_json: bool,
          dask_workers: int | None, scheduler: str | None, method: str, strategy: str | None, align: str, crop: bool,
          boundary_blend: str | None, depth_smooth: int, overwrite: bool, tile_size: int | None,
          memory_limit: str | None, workers: int | None, reduce: int, compression: str, edge_fill: bool,
          weights: str | None, device: str, quiet: bool) -> None:
    """Fuse a focus stack: a folder, several files, or a multi-page TIFF."""
    from .engine.options import FusionOptions
    from .frames.refs import frame_refs, require_frames
    from .io.images import natural_file_order
    from .jobs.aligned_frames import write_aligned_frames
    from .jobs.stack_job import StackJob, check_stack_job, run_stack

    from .cluster.connect import check_cluster_options, cluster_client

    check_cluster_options(dask_workers, scheduler)
    if output is None and align_only is None:
        raise UsageError("missing -o/--output (the fused image)")
    if output is not None and align_only is not None:
        raise UsageError("--align-only writes aligned frames instead of a fused image: drop -o/--output")
    options = FusionOptions(method=method, strategy=strategy, align=align, crop=crop, tile_size=tile_size,
                            reduce=reduce, edge_fill=edge_fill, memory_limit=memory_limit, workers=workers,
                            boundary_blend=boundary_blend)
    refs = frame_refs(natural_file_order(inputs))
    require_frames(refs)
    model = None
    if align_only is None:
        job = StackJob(inputs=refs, output=output, options=options,
                       index_map=index_map, depth_preview=depth_preview, depth_smooth=depth_smooth,
                       height_map=height_map, z_step=z_step, z_unit=z_unit, overwrite=overwrite,
                       compression=None if compression == "none" else compression)
        check_stack_job(job, refs)
        model = _load_model(weights, device, method)
    if align_only is not None and (dask_workers is not None or scheduler is not None):
        raise UsageError("--align-only runs here: drop --dask-workers/--scheduler")
    quiet = quiet or as_json
    with frame_progress(quiet) as progress, cluster_client(dask_workers, scheduler) as client:
        align_task = progress.add_task("aligning", total=len(refs), frame="", visible=align != "none")
        fuse_task = progress.add_task("fusing", total=len(refs), frame="")

        def on_align(done: int, total: int) -> None:
            progress.update(align_task, completed=done, total=total or len(refs))
            if as_json:
                _json_line("align", done=done, total=total)

        def on_frame(done: int, total: int, name: str) -> None:
            progress.update(fuse_task, completed=done, total=total, frame=name)
            if as_json:
                _json_line("frame", done=done, total=total, name=name)

        if align_only is not None:
            report = write_aligned_frames(refs, align_only, mode=align, crop=crop, overwrite=overwrite,
                                          workers=workers, memory_limit=options.memory_limit, progress=on_frame,
                                          align_progress=on_align)
        else:
            report = run_stack(job, model, device=device, progress=on_frame, align_progress=on_align, client=client)
    if as_json:
        _json_line("done", **report)
    elif not quiet:
        if align_only is not None:
            stderr_console().print(f"aligned {len(report['aligned'])} frames -> {align_only}/")
        else:
            how = options.strategy if method == "gacn" else method
            if client is not None and report["tiles"] == 1:
                stderr_console().print("note: the image was fused whole, in this process (no tiles to spread over "
                                       "the workers; --tile-size sets them)")
            stderr_console().print(f"fused {report['frames_used']} frames ({report['width']}x{report['height']}, "
                                   f"{how}, align {align}) in {report['seconds']:.1f} s -> {output}")


@main.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for one fused image (and report) per stack.")
@click.option("--format", "image_format", type=click.Choice(["tif", "png", "jpg"]), default="tif", show_default=True)
@click.option("--index-maps", is_flag=True, help="Also write NAME_index.png per stack.")
@click.option("--depth-previews", is_flag=True, help="Also write NAME_depth.png per stack.")
@click.option("--resume", is_flag=True, help="Skip stacks whose output and sidecar match inputs and parameters.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable progress on stdout.")
@cluster_options("the stacks", "ROOT and OUTDIR")
@stack_options
@size_options
@common_options
@handle_errors
def batch(root: Path, out_dir: Path, image_format: str, index_maps: bool, depth_previews: bool, resume: bool,
          as_json: bool, dask_workers: int | None, scheduler: str | None, method: str, strategy: str | None,
          align: str, crop: bool, boundary_blend: str | None, depth_smooth: int, overwrite: bool,
          tile_size: int | None, memory_limit: str | None, workers: int | None, reduce: int, compression: str,
          edge_fill: bool, weights: str | None, device: str, quiet: bool) -> None:
    """Fuse every stack under ROOT (sub-folders of frames, multi-page TIFFs) into OUTDIR."""
    from .cluster.connect import check_cluster_options, cluster_client
    from .engine.options import FusionOptions
    from .jobs.batch import REPORT_NAME, check_batch_output, check_batch_settings, discover_stacks, run_batch
    from .jobs.stack_job import StackJob

    check_cluster_options(dask_workers, scheduler)

    options = FusionOptions(method=method, strategy=strategy, align=align, crop=crop, tile_size=tile_size,
                            reduce=reduce, edge_fill=edge_fill, memory_limit=memory_limit, workers=workers,
                            boundary_blend=boundary_blend)
    template = StackJob(inputs=[], output=Path(), options=options, depth_smooth=depth_smooth, overwrite=overwrite,
                        compression=None if compression == "none" else compression)
    check_batch_settings(template, image_format, index_maps, depth_previews)
    stacks = discover_stacks(root, exclude=out_dir)
    check_batch_output(root, out_dir, stacks, image_format, index_maps, depth_previews)
    model = _load_model(weights, device, method)
    quiet = quiet or as_json
    on_cluster = dask_workers is not None or scheduler is not None
    with frame_progress(quiet) as progress, cluster_client(dask_workers, scheduler) as client:
        stack_task = progress.add_task("stacks", total=len(stacks), frame="")
        frame_task = progress.add_task("frames" if not on_cluster else "frames (workers)", total=1, frame="")

        def on_stack(status: str, name: str, info: dict) -> None:
            if status == "start":
                progress.update(stack_task, frame=name)
            else:
                progress.advance(stack_task)
                if status == "failed":
                    progress.console.print(f"[red]failed[/red] {name}: {info['error']}")
            if as_json:
                fields = {k: v for k, v in info.items() if k not in ("traceback", "name", "status")}
                _json_line("stack", status=status, name=name, **fields)

        report = run_batch(root, out_dir, template, model, image_format=image_format, index_maps=index_maps,
                           previews=depth_previews, resume=resume, on_stack=on_stack, stacks=stacks, device=device,
                           client=client,
                           progress=lambda d, t, n: progress.update(frame_task, completed=d, total=t, frame=n))
    if as_json:
        _json_line("done", ok=report["ok"], skipped=report["skipped"], failed=report["failed"],
                   seconds=report["seconds"], report=str(out_dir / REPORT_NAME))
    elif not quiet:
        stderr_console().print(f"{report['ok']} fused, {report['skipped']} skipped, {report['failed']} failed "
                     f"in {report['seconds']:.1f} s; report: {out_dir / REPORT_NAME}")
    if report["failed"]:
        sys.exit(1)


GACN_ONLY_TRAINING = {"qg_weight": "--qg-weight", "symmetric_dice": "--symmetric-dice",
                      "boundary_weight": "--boundary-weight", "boundary_width": "--boundary-width",
                      "samples_per_image": "--samples-per-image", "recipe_items": "--recipe", "workers": "--workers"}


def _refuse_gacn_only_training_options(method: str) -> None:
    """Options of GACN's training given with another method: an error, not silence."""
    if method == "gacn":
        return
    from click.core import ParameterSource

    context = click.get_current_context()
    flags = dict(GACN_ONLY_TRAINING)
    if method == "sesf":
        flags["crop"] = "--crop"
    elif method == "rpsnn":
        del flags["samples_per_image"]  # R-PSNN: pairs made per image and epoch
    else:
        del flags["workers"]  # the blend: processes that render and fuse the training stacks
    given = [flag for name, flag in flags.items()
             if context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    if given:
        raise UsageError(f"{given[0]} applies to GACN's training (--method gacn), not to --method {method}")


def _decibels(value: float) -> str:
    return f"{value:.2f} dB" if value != float("inf") else "infinite (identical to the truth)"


@main.command()
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("focusfuse-demo"),
              show_default=True, help="Folder for the demo frames, truth, fused image and index map.")
@click.option("--frames", "n_frames", type=int, default=6, show_default=True, help="2 to 64.")
@click.option("--scale", type=float, default=0.5, show_default=True,
              help="Scene size relative to the 741x500 original (0.1 to 1).")
@click.option("--method", type=METHOD_CHOICE, default="gacn", show_default=True, help=METHOD_HELP)
@click.option("--strategy", type=STRATEGY_CHOICE, default=None,
              help="gacn and sesf [default: calibrated].")
@click.option("--boundary-blend", default=None, metavar="learned|laplacian|off|WEIGHTS",
              help="gacn [default: learned]: blend the frames by sharpness near the index map's edges (see stack).")
@click.option("--no-boundary-blend", "boundary_blend", flag_value="off", help="Same as --boundary-blend off.")
@common_options
@handle_errors
def demo(out_dir: Path, n_frames: int, scale: float, method: str, strategy: str | None,
         boundary_blend: str | None, weights: str | None, device: str, quiet: bool) -> None:
    """Fuse a focus stack rendered from a real depth map and score it against the truth."""
    from .backends.select import resolve_device
    from .jobs.demo import run_demo

    model = _load_model(weights, device, method)
    with frame_progress(quiet) as progress:
        task = progress.add_task("demo", total=n_frames, frame="")
        report = run_demo(weights=model, device=model.device if model is not None else resolve_device(device),
                          n_frames=n_frames, scale=scale, method=method, strategy=strategy, out_dir=out_dir,
                          boundary_blend=boundary_blend,
                          progress=lambda done, total, name: progress.update(task, completed=done, total=total,
                                                                             frame=name))
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    w, h = report.size
    console.print(f"demo stack: {report.frames} frames of {w}x{h} (motorcycle scene, layered defocus)")
    console.print(f"best single frame: PSNR {_decibels(report.psnr_best_frame)}")
    console.print(f"fused ({report.fusion}): PSNR {_decibels(report.psnr_fused)} against the all-in-focus truth, "
                  f"index map {100 * report.index_accuracy:.1f}% correct, {report.seconds:.1f} s")
    console.print(f"images written to {report.out_dir}/")


@main.command()
@click.option("--images", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="Folder of natural images (every 10th is held out for validation).")
@click.option("--segments", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Folder of label maps NAME.png used as focus masks (else random shapes).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--method", type=click.Choice(["gacn", "sesf", "rpsnn", "blend"]), default="gacn", show_default=True,
              help="gacn: the decision network on generated focus pairs; sesf: SESF-Fuse's autoencoder "
                   "(unsupervised reconstruction of the images); rpsnn: R-PSNN regressing the all-in-focus "
                   "image of generated colour pairs (--crop sets the patch size); blend: the network of GACN's "
                   "learned boundary blend, on 8-frame stacks rendered from the images and fused by the default "
                   "GACN weights (--crop: patch size, --workers: rendering processes, --samples-per-image: "
                   "crops per stack, --refiner-epochs: its second stage, --pair-epochs: its third, the pair refiner "
                   "on rendered pairs; --init: keep the weights' network of these blend weights, and their "
                   "refiners where not trained again). The GACN loss options apply to gacn only.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs [gacn: 50, sesf: 30, rpsnn: 59, "
                                                                       "blend: 40].")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="[gacn, sesf: 1e-4; rpsnn: 2e-4; blend: 3e-3, the peak of a one-cycle schedule]")
@click.option("--lr-decay", type=click.FloatRange(0, 1), default=None,
              help="Factor every --lr-step epochs [gacn, sesf: 0.8; rpsnn: 0.5].")
@click.option("--lr-step", type=click.IntRange(1), default=None, help="[gacn, sesf: 2; rpsnn: 5]")
@click.option("--qg-weight", type=float, default=1.0, show_default=True, help="lambda in Dice + lambda (1 - Q_g).")
@click.option("--symmetric-dice", is_flag=True,
              help="Score Dice on both frames' maps, not frame A's only (the loss then ignores the frame order).")
@click.option("--boundary-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Add this weight times a Dice of the pixels near each focus boundary (0: the paper's loss).")
@click.option("--boundary-width", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Pixels either side of a focus boundary scored by --boundary-weight.")
@click.option("--samples-per-image", type=click.IntRange(1), default=None,
              help="Training pairs made from each image per epoch [gacn: 4; rpsnn: 1].")
@click.option("--crop", type=click.IntRange(32), default=None, help="Patch size [gacn: 156; rpsnn: 64].")
@click.option("--recipe", "recipe_items", multiple=True, metavar="KEY=VALUE",
              help="Change a knob of the pair generator, e.g. max_gain=0.06 (repeatable; see PairRecipe).")
@click.option("--refiner-epochs", type=click.IntRange(0), default=None,
              help="blend: epochs of the refiner, trained after the weights' network [120; 0: none].")
@click.option("--pair-epochs", type=click.IntRange(0), default=None,
              help="blend: epochs of the pair refiner, trained last on rendered pairs [0: none; the shipped "
                   "focusfuse-blend-pairs: 120].")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="Data loader processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Install the best weights as NAME (default: the run folder's name).")
@click.option("--init", "init_weights", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Start from these focusfuse weights instead of a random initialisation (fine-tuning).")
@click.option("--max-steps", type=click.IntRange(0), default=0, hidden=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace installed weights of the same --name.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@handle_errors
def train(images: Path, segments: Path | None, out_dir: Path, method: str, epochs: int | None, batch_size: int,
          lr: float,
          lr_decay: float, lr_step: int, qg_weight: float, symmetric_dice: bool, boundary_weight: float,
          boundary_width: int, samples_per_image: int, crop: int,
          recipe_items: tuple[str, ...], refiner_epochs: int | None, pair_epochs: int | None, workers: int,
          seed: int, name: str | None,
          init_weights: Path | None,
          max_steps: int, resume: bool, overwrite: bool, device: str, quiet: bool) -> None:
    """Train GACN on focus pairs generated from a folder of images (or SESF-Fuse's autoencoder on the images)."""
    from .backends.select import resolve_device
    from .train.data import recipe_overrides
    from .train.loop import TrainConfig
    from .train.loop import train as run_training

    resolve_device(device)
    if name is not None and (not name or Path(name).name != name or name.startswith(".")):
        raise UsageError(f"--name {name!r}: use a plain name (no folders), e.g. --name microscope-v1")
    _refuse_gacn_only_training_options(method)
    for flag, value in (("--refiner-epochs", refiner_epochs), ("--pair-epochs", pair_epochs)):
        if value is not None and method != "blend":
            raise UsageError(f"{flag} is for --method blend, not {method}")
    if method == "sesf":
        _train_sesf(images, out_dir, epochs or 30, batch_size, lr or 1e-4, lr_decay or 0.8, lr_step or 2, seed,
                    device, max_steps, name or out_dir.resolve().name, overwrite, quiet, segments=segments, init=init_weights,
                    resume=resume)
        return
    if method == "blend":
        _train_blend(images, segments, out_dir, epochs or 40, batch_size, lr or 3e-3, crop or 96,
                     samples_per_image or 3, workers, seed, device, max_steps, name or out_dir.resolve().name,
                     overwrite, quiet, init=init_weights, resume=resume, lr_schedule=(lr_decay, lr_step),
                     refiner_epochs=refiner_epochs, pair_epochs=pair_epochs)
        return
    if method == "rpsnn":
        _train_rpsnn(images, segments, out_dir, epochs or 59, batch_size, lr or 2e-4, lr_decay, lr_step or 5,
                     crop or 64, seed, device, max_steps, name or out_dir.resolve().name, overwrite, quiet,
                     init=init_weights, resume=resume, pairs_per_image=samples_per_image or 1)
        return
    epochs, lr, lr_decay, lr_step, crop = epochs or 50, lr or 1e-4, lr_decay or 0.8, lr_step or 2, crop or 156
    samples_per_image = samples_per_image or 4
    try:
        recipe = recipe_overrides(recipe_items)
    except ValueError as exc:
        raise UsageError(f"--recipe {exc}") from None
    if (out_dir / "last.pt").exists() and not resume:
        raise UsageError(f"{out_dir} holds a run already (pass --resume to continue it, or choose another --out)")
    cfg = TrainConfig(images=str(images), segments=str(segments) if segments else None, out=str(out_dir),
                      epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, lr_step=lr_step,
                      qg_weight=qg_weight, symmetric_dice=symmetric_dice, boundary_weight=boundary_weight,
                      boundary_width=boundary_width, samples_per_image=samples_per_image,
                      crop=crop, workers=workers, seed=seed, device=device, max_steps=max_steps, name=name,
                      init=str(init_weights) if init_weights else None, recipe=recipe)
    with frame_progress(quiet) as progress:
        epoch_task = progress.add_task("epochs", total=epochs, frame="")
        step_task = progress.add_task("steps", total=1, frame="")

        def report(kind: str, done: int, total: int, values: dict) -> None:
            if kind == "train":
                progress.update(step_task, completed=done, total=total,
                                frame=f"loss {values['loss']:.4f} Q_g {values['qg']:.4f}")
            else:
                progress.update(epoch_task, completed=done, frame=f"val Q_g {values['val_qg']:.4f}")
                if not quiet:
                    progress.console.print(f"epoch {done}/{total}: train loss {values['train_loss']:.4f}, "
                                           f"val loss {values['val_loss']:.4f}, val Q_g {values['val_qg']:.4f}, "
                                           f"val accuracy {values['val_accuracy']:.4f}"
                                           + (" (best)" if values.get("best") else ""))

        summary = run_training(cfg, resume=resume, replace_installed=overwrite, progress=report)
    if not quiet:
        stderr_console().print(f"best validation loss {summary['best_val_loss']:.4f}: {summary['best']}")
        if summary["installed"]:
            stderr_console().print(f"installed as --weights {Path(summary['installed']).stem} ({summary['installed']})")


def _refuse_gacn_training_flags(method: str, given: dict[str, object], why: str = "") -> None:
    """The first of GACN's training flags ``given`` (flag -> value, falsy when not given) to another method's
    training: an error, not silence."""
    for flag, value in given.items():
        if value:
            raise UsageError(f"{flag} applies to GACN training, not to --method {method}{why}")


def _with_epoch_bar(quiet: bool, epochs: int, bar: Callable[[dict], str], line: Callable[[dict], str],
                    run: Callable[[Callable], dict]) -> dict:
    """``run(report)`` with an epoch bar showing ``bar(row)`` and, unless quiet, one ``line(row)`` per epoch."""
    with frame_progress(quiet) as progress:
        task = progress.add_task("epochs", total=epochs, frame="")

        def report(done: int, total: int, row: dict) -> None:
            progress.update(task, completed=done, frame=bar(row))
            if not quiet:
                progress.console.print(f"epoch {done}/{total}: {line(row)}")

        return run(report)


def _train_rpsnn(images: Path, segments: Path | None, out_dir: Path, epochs: int, batch_size: int, lr: float,
                 lr_decay: float | None, lr_step: int, crop: int, seed: int, device: str, max_steps: int, name: str,
                 overwrite: bool, quiet: bool, *, init: Path | None, resume: bool, pairs_per_image: int) -> None:
    """``train --method rpsnn``: R-PSNN on generated colour pairs."""
    from .train.rpsnn import train_rpsnn

    flags = {"--init": init, "--resume": resume, "--lr-decay": lr_decay not in (None, 0.5)}
    _refuse_gacn_training_flags("rpsnn", flags, " (its lr halves every --lr-step)")
    summary = _with_epoch_bar(
        quiet, epochs, lambda row: f"val PSNR {row['val_psnr']:.2f} dB",
        lambda row: f"train MSE {row['train_mse']:.5f}, val PSNR {row['val_psnr']:.2f} dB",
        lambda report: train_rpsnn(images, out_dir, segments=segments, epochs=epochs, batch_size=batch_size, lr=lr,
                                   lr_step=lr_step, size=crop, seed=seed, device=device, max_steps=max_steps,
                                   install_as=name, replace_installed=overwrite, progress=report,
                                   pairs_per_image=pairs_per_image))
    if not quiet:
        stderr_console().print(f"best validation MSE {summary['best_val_mse']:.5f} (epoch {summary['best_epoch']}): "
                               f"{summary['weights']}; installed as --weights {name}")


def _train_blend(images: Path, segments: Path | None, out_dir: Path, epochs: int, batch_size: int, lr: float,
                 patch: int, crops: int, workers: int, seed: int, device: str, max_steps: int, name: str,
                 overwrite: bool, quiet: bool, *, init: Path | None, resume: bool,
                 lr_schedule: tuple[float | None, int | None], refiner_epochs: int | None,
                 pair_epochs: int | None) -> None:
    """``train --method blend``: the networks of GACN's learned boundary blend."""
    from .train.blend import PAIR_EPOCHS, REFINER_EPOCHS, train_blend

    _refuse_gacn_training_flags("blend", {"--resume": resume, "--lr-decay": lr_schedule[0] is not None,
                                          "--lr-step": lr_schedule[1] is not None}, " (its lr follows one cycle)")
    refiner_epochs = REFINER_EPOCHS if refiner_epochs is None else refiner_epochs
    pair_epochs = PAIR_EPOCHS if pair_epochs is None else pair_epochs
    summary = _with_epoch_bar(
        quiet, (0 if init else epochs) + refiner_epochs + pair_epochs,
        lambda row: f"{row['stage']}: val MSE {row['val_mse']:.2f}",
        lambda row: f"{row['stage']}: train MSE {row['train_mse']:.2f}, val MSE {row['val_mse']:.2f} "
                    f"(plain blend {row['val_mse_plain']:.2f})",
        lambda report: train_blend(images, out_dir, segments=segments, epochs=epochs, batch_size=batch_size, lr=lr,
                                   patch=patch, crops_per_image=crops, seed=seed, device=device, workers=workers,
                                   refiner_epochs=refiner_epochs, pair_epochs=pair_epochs, init=init,
                                   max_steps=max_steps, install_as=name,
                                   replace_installed=overwrite, progress=report))
    if not quiet:
        stderr_console().print(f"best validation MSE {summary['best_val_mse']:.2f} (epoch {summary['best_epoch']}; "
                               f"plain blend {summary['val_mse_plain']:.2f}): {summary['weights']}; use it with "
                               f"--boundary-blend {name}")


def _train_sesf(images: Path, out_dir: Path, epochs: int, batch_size: int, lr: float, lr_decay: float, lr_step: int,
                seed: int, device: str, max_steps: int, name: str, overwrite: bool, quiet: bool, *,
                segments: Path | None, init: Path | None, resume: bool) -> None:
    """``train --method sesf``: SESF-Fuse's autoencoder."""
    from .train.sesf import train_sesf

    _refuse_gacn_training_flags("sesf", {"--segments": segments, "--init": init, "--resume": resume})
    summary = _with_epoch_bar(
        quiet, epochs, lambda row: f"val loss {row['val_loss']:.2f}",
        lambda row: f"train loss {row['train_loss']:.2f}, val loss {row['val_loss']:.2f}",
        lambda report: train_sesf(images, out_dir, epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay,
                                  lr_step=lr_step, seed=seed, device=device, max_steps=max_steps, install_as=name,
                                  replace_installed=overwrite, progress=report))
    if not quiet:
        stderr_console().print(f"best validation loss {summary['best_val_loss']:.2f} (epoch {summary['best_epoch']}): "
                               f"{summary['weights']}; installed as --weights {name}")


@main.command()
@click.argument("sources", type=click.Path(path_type=Path))
@click.argument("fused", type=click.Path(path_type=Path))
@click.option("--gt", "gt_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of all-in-focus ground truths NAME.* (adds PSNR and SSIM).")
@click.option("--suffix", default="", help="Fused files are NAME<suffix>.* (e.g. _fused).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write per-image values and means.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), default=None, help="Write per-image values.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json or --csv file.")
@click.option("--quiet", "-q", is_flag=True, help="Only the mean row.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@handle_errors
def evaluate(sources: Path, fused: Path, gt_dir: Path | None, suffix: str, json_out: Path | None,
             csv_out: Path | None, overwrite: bool, quiet: bool) -> None:
    """Fusion metrics (Q_g, Q_y, Q_cb, Q_ncie, FMI_edge, FMI_dct) of FUSED/NAME.* against SOURCES.

    SOURCES holds pairs NAME_1.*, NAME_2.* (or more numbered sources), or one sub-folder per stack.
    """
    from rich.console import Console
    from rich.table import Table

    from .evaluation.evaluate import (case_files, evaluate_cases, find_cases, metric_columns, summarize, write_csv,
                                      write_json)
    from .jobs.outputs import check_outputs

    try:
        cases = find_cases(sources, fused, suffix=suffix, gt_dir=gt_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    reports = [path for path in (json_out, csv_out) if path is not None]
    check_outputs(reports, overwrite, case_files(cases), images=False)
    with frame_progress(quiet) as progress:
        task = progress.add_task("evaluating", total=len(cases), frame="")
        try:
            rows = evaluate_cases(cases, progress=lambda i, n, name: progress.update(task, completed=i, frame=name))
        except ValueError as exc:
            raise FocusFuseError(str(exc)) from exc
    columns = metric_columns(rows)
    means = summarize(rows)
    table = Table(title=f"fusion metrics, {len(rows)} image(s)", show_footer=False)
    table.add_column("image")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    if not quiet:
        for row in rows:
            table.add_row(str(row["name"]), *(f"{float(row[c]):.4f}" for c in columns))
    table.add_row("[bold]mean", *(f"[bold]{means[c]:.4f}" for c in columns))
    Console(highlight=False, soft_wrap=True).print(table)
    if json_out is not None:
        write_json(rows, json_out)
    if csv_out is not None:
        write_csv(rows, csv_out)


if __name__ == "__main__":  # pragma: no cover
    main()
