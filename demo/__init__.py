"""The ASSD Gradio demo: model cache, input parsing, streaming runs and HTML rendering.

Everything here uses only the public ``assd`` API and is testable without a browser;
``demo.ui`` assembles the Gradio page and ``app.py`` launches it.
"""
