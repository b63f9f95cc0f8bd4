"""Jobs: files in, files out (stack, pair, batch, align only, demo), with reports and atomic outputs."""
