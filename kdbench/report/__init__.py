"""report: from records to readers.

Results frames, leaderboards (markdown, CSV, LaTeX, HTML, text), the published tables beside ours, plots. Reads
records; never trains.
"""
