"""HTML reports: one self-contained page per Diagnosis, FitResult or training run.

:mod:`~stablefit.report.html.page` is the page and its style, :mod:`~.charts` draws the
charts as inline SVG with matplotlib, and :mod:`~.doctor`, :mod:`~.fit` and :mod:`~.train`
render the three reports.
"""
