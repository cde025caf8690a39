"""Age the faces in photos with a trained run: `python infer.py --help`."""

from age_cgan.cli.infer import console

if __name__ == "__main__":
    console()
