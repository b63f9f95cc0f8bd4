"""Reading and writing images and their metadata, and where fused regions go (arrays or streamed TIFF)."""
