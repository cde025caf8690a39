"""Face data: readers (IMDB-Wiki .mat, UTKFace names, CSV), decode-once cache, batch sampler.

Numpy and Pillow only (no backend import), so the same arrays feed TensorFlow and JAX::

    from age_cgan.data import load_dataset, BatchSampler
    ds = load_dataset("path/to/UTKFace")       # or wiki.mat, imdb.mat, faces.csv
    print(ds.summary.format())
    train = ds.train()
    sampler = BatchSampler(train.images, train.categories, ds.num_ages, batch_size=128)
    batch = sampler.next()  # {"image": (128, 64, 64, 3) in [-1, 1], "age": (128, 6) one-hot}

``python -m age_cgan.data PATH`` prints the summary.
"""

from age_cgan.data.dataset import (
    DataSummary,
    FaceDataset,
    NoFacesError,
    load_dataset,
    split_test,
    validation_rows,
)
from age_cgan.data.images import (SkipImage, decode_face, denormalize, is_gray, normalize,
                                  resize_faces)
from age_cgan.data.readers import (
    Listing,
    Source,
    find_source,
    read_csv,
    read_imdb_wiki,
    read_utkface,
)
from age_cgan.data.sampler import BatchSampler

__all__ = [
    "BatchSampler",
    "DataSummary",
    "FaceDataset",
    "Listing",
    "NoFacesError",
    "SkipImage",
    "Source",
    "decode_face",
    "denormalize",
    "find_source",
    "is_gray",
    "load_dataset",
    "normalize",
    "read_csv",
    "read_imdb_wiki",
    "read_utkface",
    "resize_faces",
    "split_test",
    "validation_rows",
]
