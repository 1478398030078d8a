"""degenbench's Hydra configs, as package data (a wheel carries them): `config_path="conf"`."""
