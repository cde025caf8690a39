"""The whole pipeline, briefly: `python demo.py --data PATH` (see --help)."""

from age_cgan.cli.demo import console

if __name__ == "__main__":
    console()
