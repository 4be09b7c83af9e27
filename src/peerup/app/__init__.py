"""The product: policy and features on top of the host (no wire parsing here)."""
