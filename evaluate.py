"""Evaluate a trained Age-cGAN run with independent judges: `python evaluate.py --help`."""

from age_cgan.cli.evaluate import console

if __name__ == "__main__":
    console()
