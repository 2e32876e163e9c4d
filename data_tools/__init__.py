"""data_tools: MVTec AD / MPDD / synthetic datasets, verification, download and support-set manifests."""
