"""Run configurations: `--config=configs/paper.py` on the command line, `from configs
import paper` in tests (setup.cfg puts the repository root on pytest's pythonpath)."""
