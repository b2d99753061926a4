"""Reports and figures, made from results files only (they never re-train): compare.py (measured numbers beside the
paper's, Markdown and CSV) and figures.py (Figures 1a, 1b/1c, 2 and the memorization figure)."""
