"""Foundation-model families: loading and inference, nothing about chat."""
