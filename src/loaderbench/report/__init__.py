"""The reports of a run: terminal text, Markdown, PNG plots and the files they are written to."""
