"""Train Age-cGAN: `python train.py --help`."""

from age_cgan.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
