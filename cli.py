"""Train and evaluate anime-portrait animators: ``python cli.py fit --config configs/keypoints.yaml``."""

from lightning_app.cli import main

if __name__ == "__main__":
    main()
