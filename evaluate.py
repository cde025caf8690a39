"""Evaluate a trained Age-cGAN run with independent judges: `python evaluate.py --help`."""

from age_cgan.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
