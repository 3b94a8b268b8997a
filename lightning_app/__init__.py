"""The application: LightningCLI subclass, checkpoint handling and the project's commands."""
