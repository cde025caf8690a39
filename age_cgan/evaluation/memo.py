"""Judges that remember: each distinct face is described or aged once per evaluation.

The sections of an evaluation look at many of the same faces (the aging section's stranger is a
generated face of the age section; an aged face at its own age is the identity section's
reconstruction; ``difference`` at the face's own age is the photo itself), and dlib costs
~0.1-0.15 s a face on a CPU. ``Remembering`` wraps a judge, keys each face by a hash of its
pixels, and passes only the faces it has not seen to the judge, all in one call.
"""

from __future__ import annotations

import hashlib

import numpy as np


def face_key(face: np.ndarray) -> bytes:
    """A key for one uint8 face (H, W, 3): its shape and a 128-bit hash of its pixels."""
    face = np.ascontiguousarray(face)
    return repr(face.shape).encode() + hashlib.blake2b(face.data, digest_size=16).digest()


class Remembering:
    """A judge (``FaceVerifier``-like: ``descriptors``; ``AgeEstimator``-like: ``estimate``)
    whose answers per face are kept. Every other attribute is the judge's own.

    ``descriptors(faces, progress, desc)`` / ``estimate(faces, progress, desc)`` answer from
    memory for faces seen before, and ask the judge about the rest in one batch;
    ``remember(faces, answers)`` stores answers obtained elsewhere (e.g. the data's
    dlib_descriptors.npz). ``asked`` counts the faces the judge was really given."""

    def __init__(self, judge):
        self.judge = judge
        self.memory: dict[bytes, np.ndarray] = {}
        self.asked = 0

    def __getattr__(self, name):
        return getattr(self.judge, name)

    def remember(self, faces, answers) -> None:
        for face, answer in zip(np.asarray(faces), np.asarray(answers)):
            self.memory[face_key(face)] = answer

    def _answer(self, method: str, faces, progress: bool, desc: str) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[None]
        keys = [face_key(face) for face in faces]
        new = {}
        for row, key in enumerate(keys):
            if key not in self.memory:
                new.setdefault(key, row)
        if new:
            rows = list(new.values())
            answers = getattr(self.judge, method)(faces[rows], progress, desc)
            self.asked += len(rows)
            self.remember(faces[rows], answers)
        if not keys:
            return getattr(self.judge, method)(faces, progress, desc)
        return np.stack([self.memory[key] for key in keys])

    def descriptors(self, faces, progress: bool = False, desc: str = "dlib descriptors"):
        return self._answer("descriptors", faces, progress, desc)

    def descriptor(self, face) -> np.ndarray:
        return self.descriptors(np.asarray(face)[None])[0]

    def estimate(self, faces, progress: bool = False, desc: str = "estimating ages"):
        return self._answer("estimate", faces, progress, desc)
