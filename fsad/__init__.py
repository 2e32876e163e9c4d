"""fsad: few-shot anomaly detection by feature registration (RegAD, RCM-FSAD) — the kit's library."""

__version__ = "0.2.0"
