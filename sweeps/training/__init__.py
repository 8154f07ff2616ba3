"""One run: build it from a config, check it, fit it with Lightning, and record how it ended."""
