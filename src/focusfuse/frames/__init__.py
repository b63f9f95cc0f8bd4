"""Frames as fusion reads them: references, sources readable by region (registered, cropped), edge fill."""
