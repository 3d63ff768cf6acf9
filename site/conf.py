"""Sphinx configuration of the course website (built by scripts/build_site.py, never by hand).

The build reads the committed notebooks as they are (no execution) and works with no network:
MathJax is served from the site itself, copied from the jupyter-server-mathjax package.
"""

project = "QuantVGGT Lab"
author = "QuantVGGT Lab"
copyright = "2026, QuantVGGT Lab"

extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True  # $$...$$ inside a paragraph, as Jupyter renders it
nb_execution_mode = "off"  # the committed outputs are the content
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_title = "QuantVGGT Lab"
html_static_path = ["_static"]
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
}
# MathJax 2.7 from _static (copied there by the build script): no CDN
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# the package ships the STIX-Web fonts only (not MathJax's default TeX fonts)
mathjax2_config = {
    "showMathMenu": False,
    "messageStyle": "none",
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
    # Sphinx marks the page tex2jax_ignore and its math spans "math" (MathJax 3 style)
    "tex2jax": {"processClass": "math|output_area", "ignoreClass": "tex2jax_ignore"},
}

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
