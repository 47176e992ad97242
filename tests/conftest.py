"""Set-up shared by every test.

The simulator renders eager here unless a test asks for the compiled path: compiling its graphs
costs seconds per variant (class of image, preset) in every fresh process, which would add
minutes to the suite. ``tests/simulate/test_compiled.py`` checks the compiled path (its agreement
with eager, its independence of the batch, its fallback). Set ``DARKLENS_SIM_BACKEND=auto`` (or
``compiled``) to run the whole suite on the compiled path instead.
"""

import os

os.environ.setdefault("DARKLENS_SIM_BACKEND", "eager")
