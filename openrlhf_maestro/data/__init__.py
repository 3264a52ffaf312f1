"""Data preparation: `python -m openrlhf_maestro.data.nover IN OUT_DIR` turns NOVER CSV/JSONL into prompt JSONL."""
