"""Age prototypes: what averages of real faces of each age category know about aging.

Burt & Perrett (1995) and Tiddeman, Burt & Perrett (2001): average the aligned faces of each age
category, then move a face by the difference between the target's and the source's averages, in
shape (landmarks), colour and texture (each frequency band's local energy). ``build`` makes
them from a folder of faces (``python -m age_cgan.prototypes build``), ``store`` reads and writes
the file, ``fields`` holds the per-pixel functions both use; the aging method itself is
``age_cgan.aging.prototype``.
"""

from age_cgan.prototypes.store import PrototypeFileError, Prototypes

__all__ = ["PrototypeFileError", "Prototypes"]
