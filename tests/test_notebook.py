"""The Colab walkthrough runs top to bottom on tiny settings, so it cannot rot."""


import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "age_cgan_walkthrough.ipynb"


def test_walkthrough_executes(tmp_path, tiny_faces, monkeypatch):
    import os

    # the kernel imports this working tree's package, not whichever age_cgan is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    parameters[0].source += "\n".join([
        "",
        f"DATA = {str(tiny_faces)!r}",
        "SUBSET = 18",
        f"RUN = {str(tmp_path / 'logs' / 'notebook')!r}",
        "BATCH_SIZE = 4",
        'STEPS = {"1": 2, "2": 2, "3": 2, "age": 2, "aging": 2}',
        "IMAGE_SIZE = 32",
        'FR_WEIGHTS = "none"',
        "FR_INPUT_SIZE = 75",
        "EVALUATE = False",
    ])
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "Faces per age category" in outputs
    run = tmp_path / "logs" / "notebook"
    for stage in "123":
        assert list((run / f"stage{stage}" / "samples").glob("*.png"))
    assert (run / "aged_photo.png").is_file()
    assert "source_category" in outputs
    # the default method: trained here, then the shipped model on the same photo
    assert (run / "models" / "aging_network.keras").is_file()
    assert (run / "aged_photo_network.png").is_file() and (run / "aged_photo_shipped.png").is_file()
    assert "this run can age with: network" in outputs
    assert outputs.count("own age guessed by the age estimator") == 2
