"""Example data shipped inside the package: the public-domain portrait the demo ages.

```
age_cgan/examples/astronaut.jpg   NASA portrait of Eileen Collins, 256x256 JPEG, public domain
age_cgan/examples/README.md       its source and licence
```

The demo (``age_cgan/cli/demo.py``) ages it by default, and the tests, benchmarks, tools and the
notebook use it as a real photo that is not a face crop. From the repository root it is also a
plain path: ``python infer.py age_cgan/examples/astronaut.jpg --out aged.png``.
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path

#: The portrait's file name inside this package.
PORTRAIT_NAME = "astronaut.jpg"

_extracted = ExitStack()
atexit.register(_extracted.close)


def portrait_path() -> Path:
    """The bundled portrait as a file on disk, found through ``importlib.resources``.

    In an ordinary (unzipped) install or a checkout this is the file inside the package; were
    the package imported from a zip, the portrait is extracted once to a temporary file that is
    removed when the interpreter exits."""
    resource = files(__name__) / PORTRAIT_NAME
    if isinstance(resource, Path):
        return resource
    return _extracted.enter_context(as_file(resource))


#: The bundled portrait (a ``pathlib.Path``).
PORTRAIT = portrait_path()
