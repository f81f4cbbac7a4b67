"""``cassette-denoise serve``: a local page to hear before, after and what was removed, and choose a strength.

:mod:`render` re-applies a kept model mask and draws spectrograms (numbers only), :mod:`tracks` holds the
uploads and the workers, :mod:`app` is the web layer; ``static/`` is the page itself (no CDN, works offline).
"""
