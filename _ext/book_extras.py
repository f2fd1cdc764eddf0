"""Three small additions to the Jupyter Book build.

- Exercises are numbered per chapter, "Exercise 9.3". sphinx-exercise numbers them through
  Sphinx's numfig, which counts across the whole book (chapter 8's second exercise would be
  "Exercise 35"). Each exercise directive states its number (``:enumerator: 9.3``, which
  jupyterlab-myst shows in JupyterLab too); after Sphinx assigns its numbers, each chapter's
  exercises are renumbered (N, 1), (N, 2), ... in their order, N from the chapter's file name,
  and tests/test_book_exercises.py checks that the stated numbers follow that order.
- The Colab button opens the reader edition (``notebooks/``, plain Markdown: Colab does not
  render MyST) instead of the chapter's source.
- MathJax, served from ``_static/mathjax/`` so formulas render offline, loads once, and only
  on pages with formulas. Jupyter Book adds every ``.js`` file under ``_static/`` to every
  page; with Sphinx's own (deferred) tag, pages with formulas loaded MathJax twice and the
  second copy threw "Cannot set property Package".
"""
import re

from docutils.parsers.rst import directives
from sphinx_exercise.directive import ExerciseDirective


def renumber(app, env):
    changed = []
    for docname, numbers in env.toc_fignumbers.items():
        chapter = re.match(r"chapters/(\d+)_", docname)
        if not chapter or "exercise" not in numbers:
            continue
        order = sorted(numbers["exercise"], key=numbers["exercise"].get)
        numbers["exercise"] = {ids: (int(chapter.group(1)), k) for k, ids in enumerate(order, 1)}
        changed.append(docname)
    return changed


def colab_reader_edition(app, pagename, templatename, context, doctree):
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            if button.get("text") == "Colab":
                button["url"] = button["url"].replace("/chapters/", "/notebooks/")


def mathjax_once(app, config):
    mathjax = config.mathjax_path
    config.html_js_files = [js for js in config.html_js_files
                            if (js[0] if isinstance(js, tuple) else js) != mathjax]


def setup(app):
    app.connect("config-inited", mathjax_once)
    ExerciseDirective.option_spec["enumerator"] = directives.unchanged
    app.connect("env-get-updated", renumber, priority=900)
    app.connect("html-page-context", colab_reader_edition, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
