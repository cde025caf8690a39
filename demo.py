"""The whole pipeline, briefly: `python demo.py --data PATH` (see --help)."""

from age_cgan.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
