"""degenbench: benchmark text degeneration in vision-language OCR models, and SFT -> DPO."""

__version__ = "0.1.0"
