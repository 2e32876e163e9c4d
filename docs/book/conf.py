"""Sphinx configuration of the course website (built by ``make book`` / ``python -m fsad.book``).

The pages are the executed smoke-mode notebooks (MyST-NB, never re-executed here) in course order. Maths is
rendered by MathJax 3 served from the site itself (the ``sphinx-mathjax-offline`` package carries its files), so
the site works without any network.
"""

project = "fsad-kit: few-shot anomaly detection by feature registration"
author = "fsad-kit contributors"
extensions = ["myst_nb", "sphinx-mathjax-offline"]
# The notebooks arrive executed (make demo); the site shows their outputs as they are.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = "fsad-kit course"
html_theme_options = {"page_width": "1200px", "sidebar_width": "260px"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# Notebook outputs the site cannot show (widget views in a static page) are dropped quietly.
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
