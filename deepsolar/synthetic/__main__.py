"""``python -m deepsolar.synthetic OUT_DIR [--seed N] [--config scene.yaml]``."""

from deepsolar.synthetic.generate import main

raise SystemExit(main())
