"""Paper experiments that compare several trained models (scripts: `python -m vaelab.experiments.<name>`)."""
