"""Train Age-cGAN: `python train.py --help`."""

from age_cgan.cli.train import console

if __name__ == "__main__":
    console()
