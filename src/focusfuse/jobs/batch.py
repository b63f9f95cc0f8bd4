"""``focusfuse batch``: many stacks in one run, one output per stack, resumable, with JSON reports.

A stack is a sub-folder of ROOT holding images, or a multi-page TIFF directly in ROOT. Every stack gets
OUTDIR/NAME.<format> and a sidecar OUTDIR/NAME.json (its report plus a hash of its inputs' names,
sizes and modification times and of the parameters); ``resume`` skips a stack only when its output
exists and the sidecar's hashes match. A failing stack is reported and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import FocusFuseError, UsageError
from ..io.images import (TIFF_SUFFIXES, WRITE_SUFFIXES, check_output_folder, list_images, natural_key, tiff_page_count,
                         write_text_atomic)
from ..methods import WITHOUT_MAPS
from .outputs import remove_stale_partials
from .report import weights_id
from .stack_job import StackJob, check_job_settings, run_stack
from .stack_warnings import collected_warnings, warn_for_stack

REPORT_NAME = "batch-report.json"


@dataclass(frozen=True)
class StackSource:
    """One stack of a batch: its output name, its frame files, and its folder (None for a TIFF file)."""

    name: str
    inputs: tuple[Path, ...]
    folder: Path | None = None

    def __str__(self) -> str:
        """The stack as the user sees it in ROOT: ``NAME/`` for a folder, the file name for a TIFF."""
        return f"{self.folder.name}/" if self.folder is not None else self.inputs[0].name


def discover_stacks(root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[StackSource]:
    """Sub-folders with images and multi-page TIFFs of ``root``, in natural order (``exclude``: the
    output folder, when it lies inside ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    stacks = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.resolve() == skip:
            if entry.is_dir() and list_images(entry) and not (entry / REPORT_NAME).exists():
                raise UsageError(f"{exclude}: the output folder holds images but no {REPORT_NAME} of an earlier "
                                 "batch: is it a stack? Choose another output folder")
            continue
        if entry.is_dir():
            images = list_images(entry)
            if images:
                stacks.append(StackSource(entry.name, tuple(images), entry))
        elif entry.suffix.lower() in TIFF_SUFFIXES:
            try:
                pages = tiff_page_count(entry)
            except FocusFuseError:
                pages = 2  # unreadable: let the stack fail with its own message
            if pages > 1:
                stacks.append(StackSource(entry.stem, (entry,)))
    if not stacks:
        raise UsageError(f"{root}: no stacks found (sub-folders of images, or multi-page TIFFs)")
    by_name: dict[str, list[StackSource]] = {}
    for stack in stacks:
        by_name.setdefault(stack.name.casefold(), []).append(stack)
    clashes = [group for group in by_name.values() if len(group) > 1]
    if clashes:
        names = " and ".join(str(s) for s in clashes[0])
        raise UsageError(f"{names} would write the same outputs (names differ in case at most): rename one")
    return stacks


@dataclass(frozen=True)
class StackFiles:
    """The files a batch writes for one stack in OUTDIR: its image, its sidecar, its index map and depth preview
    (None when not asked)."""

    output: Path
    sidecar: Path
    index_map: Path | None = None
    depth_preview: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.output, self.sidecar, self.index_map, self.depth_preview) if p is not None]


def stack_files(out: Path, name: str, image_format: str, index_maps: bool, previews: bool) -> StackFiles:
    return StackFiles(out / f"{name}.{image_format}", out / f"{name}.json",
                      out / f"{name}_index.png" if index_maps else None,
                      out / f"{name}_depth.png" if previews else None)


def check_output_names(stacks: list[StackSource], files: list[StackFiles]) -> None:
    """Refuse, before any work, stacks whose files would land on one another's (``a_index/``'s image is ``a/``'s
    index map in png) or on the batch report (a stack named ``batch-report``); names compare without case."""
    owner: dict[str, int] = {REPORT_NAME.casefold(): -1}  # file name -> the stack that writes it (-1: the report)
    for number, (stack, stack_paths) in enumerate(zip(stacks, files)):
        for path in stack_paths.paths():
            first = owner.setdefault(path.name.casefold(), number)
            if first != number:
                writer = "the batch report" if first < 0 else str(stacks[first])
                raise UsageError(f"{writer} and {stack} would both write {path.name} in the output folder: "
                                 "rename one")


def check_batch_settings(template: StackJob, image_format: str, index_maps: bool, previews: bool) -> str:
    """Refuse a batch's settings before any work; returns the output format's extension (``tif``, ...).

    The template's own outputs must be unset: every stack's are named from OUTDIR and its name."""
    check_job_settings(template)
    if template.outputs() != [Path()]:
        named = ", ".join(str(p) for p in template.outputs() if p != Path())
        raise UsageError(f"a batch names every stack's outputs itself; the template names {named}")
    image_format = str(image_format).lower().lstrip(".")
    if f".{image_format}" not in WRITE_SUFFIXES:
        raise UsageError(f"output format {image_format!r}: use one of {', '.join(s[1:] for s in WRITE_SUFFIXES)}",
                         option="image_format")
    if (index_maps or previews) and template.options.method in WITHOUT_MAPS:
        raise UsageError(f"the {template.options.method} method regresses pixels: it has no index maps or depth "
                         "previews to write", option="index_maps")
    return image_format


def check_batch_output(root: str | os.PathLike, out_dir: str | os.PathLike, stacks: list[StackSource],
                       image_format: str = "tif", index_maps: bool = False, previews: bool = False) -> Path:
    """Refuse an output folder that is ROOT itself or inside a stack folder, is a file or is read-only, and
    stacks whose files (as ``image_format``, ``index_maps`` and ``previews`` name them) would land on one
    another's; create the folder when missing."""
    check_output_names(stacks, [stack_files(Path(out_dir), s.name, image_format, index_maps, previews)
                                for s in stacks])
    out = Path(out_dir).resolve()
    if out == Path(root).resolve():
        raise UsageError(f"{out_dir}: the output folder must not be ROOT itself (choose a separate folder)")
    for stack in stacks:
        folder = stack.folder.resolve() if stack.folder is not None else None
        if folder is not None and (out == folder or folder in out.parents):
            raise UsageError(f"{out_dir}: the output folder lies inside the stack {stack}")
    return check_output_folder(out_dir, create=True)


def inputs_hash(paths: tuple[Path, ...]) -> str:
    """Hash of the inputs' names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in paths:
        files = list_images(path) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def _sidecar_matches(sidecar: Path, output: Path, hashes: dict[str, str]) -> bool:
    if not (output.exists() and sidecar.exists()):
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("status") == "ok" and all(recorded.get(k) == v for k, v in hashes.items())


@dataclass(frozen=True)
class BatchStack:
    """One stack's work in a batch: its job, and its sidecar with the hashes and parameters it records."""

    name: str
    job: StackJob
    sidecar: Path
    hashes: dict[str, str]
    params: dict[str, Any]
    run_id: str = ""  # on a cluster: the batch run's id, recorded in the sidecar (a retried task finds its work)


def run_batch_stack(stack: BatchStack, model: Any, progress=None,
                    device: str | torch.device = "auto") -> dict[str, Any]:
    """Fuse one stack of a batch and write its sidecar (in this process, or on a cluster's worker): its entry.
    Temporary files an earlier attempt left when its process was killed are removed first; a stack this run
    already finished (its task re-run because the worker holding its result died) is not fused again. The
    stack's warnings are in its entry (``warnings``), to be raised where the batch runs (:func:`run_batch`)."""
    if stack.run_id:
        done = _finished_in_run(stack)
        if done is not None:
            return done
    remove_stale_partials(stack.job.outputs())
    with collected_warnings() as texts:
        entry = _run_one(stack.name, stack.job, model, progress, device)
    if texts:
        entry["warnings"] = texts
    record_stack(stack, entry)
    return entry


def record_stack(stack: BatchStack, entry: dict[str, Any]) -> None:
    """Write the stack's sidecar: its entry, hashes and parameters (a failure only where no output exists,
    since the sidecar describes the output that exists)."""
    if entry["status"] == "ok" or not stack.job.output.exists():
        run = {"run_id": stack.run_id} if stack.run_id else {}
        write_text_atomic(stack.sidecar, json.dumps({**entry, **stack.hashes, "params": stack.params, **run},
                                                    indent=1) + "\n")


def _finished_in_run(stack: BatchStack) -> dict[str, Any] | None:
    """The entry of a stack that this batch run (``stack.run_id``) already fused, from its sidecar; else None."""
    try:
        recorded = json.loads(stack.sidecar.read_text())
    except (OSError, ValueError):
        return None
    if recorded.get("run_id") != stack.run_id or recorded.get("status") != "ok" or not stack.job.output.exists():
        return None
    keep = set(recorded) - set(stack.hashes) - {"params", "run_id"}
    return {key: recorded[key] for key in recorded if key in keep}


def run_batch(root: str | os.PathLike, out_dir: str | os.PathLike, template: StackJob, model: Any, *,
              image_format: str = "tif", index_maps: bool = False, previews: bool = False, resume: bool = False,
              on_stack: Callable[[str, str, dict[str, Any]], None] | None = None,
              progress=None, stacks: list[StackSource] | None = None,
              device: str | torch.device = "auto", client: Any = None) -> dict[str, Any]:
    """Fuse every stack under ``root`` into ``out_dir``; returns (and writes) the run report. ``model``: the
    method's weights on their device (GACN's, SESF-Fuse's or R-PSNN's; None for a method without weights, run on
    ``device``). ``client``: a Dask client whose workers fuse the stacks as tasks (each worker loads the
    weights once, onto its own ``device``; the outputs are the same); the folders must be visible to them. A
    stack's warnings, wherever it ran, are raised here named by the stack, and listed in its entry."""
    image_format = check_batch_settings(template, image_format, index_maps, previews)
    if client is not None:
        from ..cluster.connect import check_client

        check_client(client)
    out = Path(out_dir)
    stacks = stacks if stacks is not None else discover_stacks(root, exclude=out)
    check_batch_output(root, out, stacks, image_format, index_maps, previews)
    if client is not None:  # workers elsewhere do not share this process's working folder
        from ..cluster.connect import shared_memory_limit

        if template.options.memory_limit is None and (limit := shared_memory_limit(client)) is not None:
            template = replace(template, options=replace(template.options, memory_limit=limit))  # workers here
        out = out.resolve()
        stacks = [replace(s, inputs=tuple(p.resolve() for p in s.inputs)) for s in stacks]
    options = template.options
    params = {**({"method": options.method} if options.method != "gacn" else {}),  # old sidecars stay valid
              "strategy": options.strategy, "align": options.align, "crop": options.crop,
              "format": image_format, "index_maps": index_maps, "previews": previews,
              "depth_smooth": template.depth_smooth, "compression": template.compression, **weights_id(model),
              **({"reduce": options.reduce} if options.reduce != 1 else {}),  # old sidecars stay valid
              **({} if options.edge_fill else {"edge_fill": False})}
    files = [stack_files(out, stack.name, image_format, index_maps, previews) for stack in stacks]
    started = time.perf_counter()
    entries: dict[str, dict[str, Any]] = {}
    work: list[BatchStack] = []
    run_id = uuid.uuid4().hex if client is not None else ""

    def finished(name: str, entry: dict[str, Any]) -> None:
        """A stack's entry, wherever it ran: kept, its warnings raised here, the caller told."""
        entries[name] = entry
        warn_for_stack(name, entry.get("warnings", []))
        if on_stack is not None:
            on_stack(entry["status"], name, entry)

    for number, (stack, stack_paths) in enumerate(zip(stacks, files), start=1):
        output, sidecar = stack_paths.output, stack_paths.sidecar
        hashes = {"inputs_hash": inputs_hash(stack.inputs), "params_hash": params_hash(params)}
        job = replace(template, inputs=list(stack.inputs), output=output, index_map=stack_paths.index_map,
                      depth_preview=stack_paths.depth_preview, overwrite=template.overwrite or resume)
        item = BatchStack(stack.name, job, sidecar, hashes, params, run_id)
        if on_stack is not None:
            on_stack("start", stack.name, {"number": number, "total": len(stacks)})
        if resume and _sidecar_matches(sidecar, output, hashes):
            finished(stack.name, {"name": stack.name, "status": "skipped", "output": str(output)})
        elif client is None:
            finished(stack.name, run_batch_stack(item, model, progress, device))
        else:
            work.append(item)
    if work:
        from ..cluster.stacks import fuse_stacks_on_cluster

        with closing(fuse_stacks_on_cluster(client, work, model, options.method, device,
                                            progress=progress)) as done:
            for name, entry in done:  # an error here (or Ctrl-C) cancels the stacks still running
                finished(name, entry)
    results = [entries[stack.name] for stack in stacks]
    report = {
        "root": str(root), "output_dir": str(out), "stacks": results,
        "ok": sum(r["status"] == "ok" for r in results), "skipped": sum(r["status"] == "skipped" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "seconds": round(time.perf_counter() - started, 3), "params": params,
    }
    write_text_atomic(out / REPORT_NAME, json.dumps(report, indent=1) + "\n")
    return report


def batch(root: str | os.PathLike, out_dir: str | os.PathLike, *, method: str = "gacn", weights: Any = None,
          device: str = "auto", strategy: str | None = None, align: str = "auto", crop: bool = False,
          image_format: str = "tif", index_maps: bool = False, previews: bool = False, resume: bool = False,
          overwrite: bool = False, depth_smooth: int = 0, compression: str | None = None,
          tile_size: int | None = None, reduce: int = 1, edge_fill: bool = True,
          memory_limit: int | str | None = None, workers: int | None = None, client: Any = None,
          on_stack: Callable[[str, str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fuse every stack under ``root`` (sub-folders of frames, multi-page TIFFs) into ``out_dir``: what
    ``focusfuse batch`` does, returning its report. Options as in :func:`focusfuse.fuse_stack`; ``client``: a
    Dask client whose workers fuse the stacks (see :func:`run_batch`); ``on_stack(status, name, info)`` is
    called as each stack starts and ends."""
    from ..backends.select import resolve_device
    from ..engine.options import FusionOptions
    from ..methods.registry import load_method_weights

    options = FusionOptions(method=method, strategy=strategy, align=align, crop=crop, tile_size=tile_size,
                            reduce=reduce, edge_fill=edge_fill, memory_limit=memory_limit, workers=workers)
    template = StackJob(inputs=[], output=Path(), options=options, depth_smooth=depth_smooth, overwrite=overwrite,
                        compression=compression)
    image_format = check_batch_settings(template, image_format, index_maps, previews)
    stacks = discover_stacks(root, exclude=out_dir)
    check_batch_output(root, out_dir, stacks, image_format, index_maps, previews)  # all refused before the weights load
    model = load_method_weights(method, weights, resolve_device(device))
    return run_batch(root, out_dir, template, model, image_format=image_format, index_maps=index_maps,
                     previews=previews, resume=resume, on_stack=on_stack, stacks=stacks, device=device,
                     client=client)


def _run_one(name: str, job: StackJob, model: Any, progress, device: str | torch.device) -> dict[str, Any]:
    try:
        report = run_stack(job, model, device=device, progress=progress)
        return {"name": name, "status": "ok", **report}
    except FocusFuseError as exc:
        return {"name": name, "status": "failed", "error": str(exc).splitlines()[0]}
    except Exception as exc:  # one broken stack must not end the batch
        return {"name": name, "status": "failed", "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                "traceback": traceback.format_exc()}
