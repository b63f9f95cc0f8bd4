"""A pair job, files in -> files out: what ``focusfuse pair`` runs (fused image, optional decision map, report)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..backends.select import select_backend
from ..engine.fuse import run_pair_fusion
from ..engine.options import FusionOptions
from ..errors import UsageError
from ..frames.refs import frame_refs, input_paths
from ..io.images import write_image
from ..methods import WITHOUT_MAPS
from ..io.metadata import embed_exif_in_tiff, read_metadata
from .outputs import JobOutput, check_map_formats, check_outputs, staged_outputs, write_all, write_map
from .report import peak_memory_mb, provenance, weights_id

PAIR_OPTIONS = FusionOptions(align="none")


def run_pair(image_a: Path, image_b: Path, output: Path, model: Any, *, decision_map: Path | None = None,
             options: FusionOptions = PAIR_OPTIONS, compression: str | None = None, overwrite: bool = False,
             device: str | torch.device = "auto") -> dict[str, Any]:
    """Fuse two images into ``output`` (and the final decision map, 1 = from A); returns the report.
    ``options`` as for stacks (alignment registers B onto A; its failure is an error). ``model``: the
    method's weights on their device, GACN's, SESF-Fuse's or R-PSNN's (None for a method without weights, run on
    ``device``)."""
    refs = frame_refs([image_a, image_b])
    if len(refs) != 2:
        raise UsageError("a pair is two single images (fuse a multi-page TIFF as a stack)")
    check_outputs([p for p in (output, decision_map) if p is not None], overwrite, input_paths(refs))
    check_map_formats(decision_map=decision_map)
    if decision_map is not None and options.method in WITHOUT_MAPS:
        raise UsageError(f"the {options.method} method regresses pixels: it has no decision map to write",
                         option="decision_map")
    backend = select_backend(model.device if model is not None else device)
    metadata = dataclasses.replace(read_metadata(image_a), description=provenance(model, "pair", 2, options.reduce,
                                                                                  options.method))
    start = time.perf_counter()
    with staged_outputs() as staged:
        sink_output = JobOutput(output, staged, metadata, compression=compression,
                                map_paths={"decision": decision_map} if decision_map is not None else None)
        run = run_pair_fusion(refs, options, weights=model, device=backend, output=sink_output)
        if output in sink_output.streamed:
            embed_exif_in_tiff(staged.path(output), metadata)
        else:
            writes = [lambda: write_image(staged.path(output), run.sink.fused, metadata=metadata,
                                          compression=compression)]
            if decision_map is not None:
                writes.append(lambda: write_map(staged.path(decision_map), run.sink.maps["decision"], "probability"))
            write_all(writes)
    h, w = run.sink.shape
    return {"output": str(output), "width": w, "height": h, "device": str(backend.device), "method": options.method,
            "reduce": options.reduce,
            "edge_fill": options.edge_fill, "tiles": len(run.plan.tiles) if run.plan else 1,
            "seconds": round(time.perf_counter() - start, 3), **peak_memory_mb(backend.device), **weights_id(model)}


__all__ = ["run_pair", "PAIR_OPTIONS"]
